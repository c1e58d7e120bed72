//! What observability costs: calls/s with JSON logs, metrics and trace
//! context on, against the same calls with them off, in one run.
//!
//! ```text
//! cargo bench --bench observability                 # memory and AMQP, 5 rounds
//! ROUNDS=7 SKIP_AMQP=1 cargo bench --bench observability
//! ```
//!
//! *Off*: no log subscriber, metrics not recorded. *On*: the JSON log
//! subscriber at INFO (what `--log-format json` installs; lines go to a
//! sink), Prometheus metrics recorded for entrypoints and clients, and the
//! trace context (always carried; it is in both columns). Each round starts
//! both sides' services and takes `BATCHES` batches of calls from each in
//! turn (off, on, off, on, …) so that the machine's noise hits both alike;
//! every figure is the median of all batches. In memory both sides share
//! one runtime (the "on" side's tasks log through the JSON subscriber); over
//! AMQP, where service workers run in tasks of their own, each side has its
//! own runtime, the "on" one logging from every thread. The AMQP part needs the local broker
//! (`AMQP_URI`, default `amqp://guest:guest@127.0.0.1:5672`).

use shimeji::logging::LogFormat;
use shimeji::prelude::*;
use tokio::runtime::Runtime;

mod common;

use common::{concurrent_logged, env_usize, median, sequential, Greeter, GreeterClient};
use tracing::instrument::WithSubscriber;

#[derive(Clone, Copy, Default)]
struct Pair {
    seq: f64,
    c64: f64,
}

async fn start(config: Config) -> (RunningServices, GreeterClient) {
    let running = ServiceRunner::with_config(config)
        .service(Greeter)
        .start()
        .await
        .expect("start greeter");
    let greeter: GreeterClient = running.client();
    (running, greeter)
}

/// One batch: `calls` one at a time, then `calls64` with 64 in flight;
/// every calling task logs through `logs` when given.
async fn batch(
    greeter: GreeterClient,
    calls: usize,
    calls64: usize,
    logs: Option<tracing::Dispatch>,
) -> Pair {
    let one_at_a_time = sequential(calls, || async {
        std::hint::black_box(greeter.hello("Ada".into()).await.expect("call failed"));
    });
    let (seq, _, _) = match &logs {
        Some(logs) => one_at_a_time.with_subscriber(logs.clone()).await,
        None => one_at_a_time.await,
    };
    let c64 = concurrent_logged(
        calls64,
        greeter.clone(),
        |g: GreeterClient| async move {
            std::hint::black_box(g.hello("Ada".into()).await.expect("call failed"));
            g
        },
        logs,
    )
    .await;
    Pair { seq, c64 }
}

/// Both sides of one transport: services started (metrics on for the "on"
/// side only), then batches taken in turn, off then on, so that the
/// machine's noise hits both alike. Every batch runs on a runtime worker
/// thread, where the runtime's log subscriber is, if it has one.
struct Sides {
    off: (RunningServices, GreeterClient),
    on: (RunningServices, GreeterClient),
}

impl Sides {
    fn start(off_rt: &Runtime, on_rt: &Runtime, config: Config, metrics: bool) -> Self {
        shimeji::metrics::disable();
        let off = off_rt.block_on(start(config.clone()));
        if metrics {
            shimeji::metrics::enable();
        }
        let on = on_rt.block_on(start(config));
        Sides { off, on }
    }

    fn batches(
        &self,
        rts: (&Runtime, &Runtime),
        metrics: bool,
        task_logs: Option<&tracing::Dispatch>,
        (n, calls, calls64): (usize, usize, usize),
        out: (&mut Vec<Pair>, &mut Vec<Pair>),
    ) {
        let run = |rt: &Runtime, greeter: &GreeterClient, logs: Option<&tracing::Dispatch>| {
            let greeter = greeter.clone();
            let logs = logs.cloned();
            rt.block_on(async move {
                tokio::spawn(batch(greeter, calls, calls64, logs))
                    .await
                    .expect("bench task")
            })
        };
        for _ in 0..n {
            // Clients record when recording is on: switch it per side.
            shimeji::metrics::disable();
            out.0.push(run(rts.0, &self.off.1, None));
            if metrics {
                shimeji::metrics::enable();
            }
            out.1.push(run(rts.1, &self.on.1, task_logs));
        }
    }

    fn stop(self, off_rt: &Runtime, on_rt: &Runtime) {
        off_rt.block_on(self.off.0.stop());
        on_rt.block_on(self.on.0.stop());
    }
}

/// A runtime whose threads log through `dispatch` (or through nothing).
fn runtime(dispatch: Option<tracing::Dispatch>) -> Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(dispatch) = dispatch {
        builder.on_thread_start(move || {
            // The thread's default for its whole life.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        });
    }
    builder.build().expect("tokio runtime")
}

fn report(name: &str, off: &[Pair], on: &[Pair]) {
    let m = |xs: &[Pair], f: fn(&Pair) -> f64| median(xs.iter().map(f).collect());
    let (off_seq, on_seq) = (m(off, |p| p.seq), m(on, |p| p.seq));
    let (off_c64, on_c64) = (m(off, |p| p.c64), m(on, |p| p.c64));
    println!(
        "| {name:<8} | {off_seq:>12.0} | {on_seq:>12.0} | {:>5.2} | {off_c64:>12.0} | {on_c64:>12.0} | {:>5.2} |",
        on_seq / off_seq,
        on_c64 / off_c64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = env_usize("ROUNDS", if quick { 1 } else { 5 });
    let calls = env_usize("CALLS", if quick { 2_000 } else { 200_000 });
    let calls64 = env_usize("CALLS64", if quick { 5_000 } else { 1_000_000 });
    let amqp_calls = env_usize("AMQP_CALLS", if quick { 200 } else { 2_000 });
    let amqp_calls64 = env_usize("AMQP_CALLS64", if quick { 500 } else { 10_000 });
    let amqp = std::env::var("SKIP_AMQP").is_err();
    let uri = std::env::var("AMQP_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_string());

    // ON_LOGS=0 or ON_METRICS=0 leave one part off in the "on" column, to
    // see what each costs.
    let logs = env_usize("ON_LOGS", 1) == 1;
    let metrics = env_usize("ON_METRICS", 1) == 1;
    let json = tracing::Dispatch::new(
        shimeji::logging::subscriber("info", LogFormat::Json, std::io::sink).expect("log filter"),
    );
    let on_logs = logs.then_some(&json);
    let off_rt = runtime(None);
    let on_rt = runtime(on_logs.cloned());

    let (mut mem_off, mut mem_on, mut amqp_off, mut amqp_on) = (vec![], vec![], vec![], vec![]);
    let rts = (&off_rt, &on_rt);
    let batches = env_usize("BATCHES", if quick { 1 } else { 10 });
    for round in 1..=rounds {
        // In memory a call runs in its caller's task: one runtime for both.
        let sides = Sides::start(&off_rt, &off_rt, Config::new(), metrics);
        sides.batches(
            (&off_rt, &off_rt),
            metrics,
            on_logs,
            (batches, calls / batches, calls64 / batches),
            (&mut mem_off, &mut mem_on),
        );
        sides.stop(&off_rt, &off_rt);
        if amqp {
            let config = Config::new().set("AMQP_URI", uri.clone());
            let sides = Sides::start(&off_rt, &on_rt, config, metrics);
            sides.batches(
                rts,
                metrics,
                None,
                (batches, amqp_calls / batches, amqp_calls64 / batches),
                (&mut amqp_off, &mut amqp_on),
            );
            sides.stop(&off_rt, &on_rt);
        }
        eprintln!("round {round}/{rounds} done");
    }
    // Recording really was on: the scrape counts the calls.
    let scrape = shimeji::metrics::render();
    assert!(
        !metrics ||
        scrape.contains(
            r#"shimeji_entrypoint_calls_total{service="greeter",entrypoint="hello",outcome="ok"}"#
        ),
        "metrics were not recorded:\n{scrape}"
    );

    println!("\nobservability off vs on, greeter.hello(\"Ada\"), medians of {rounds} round(s) x {batches} batches\n");
    println!(
        "| transport | off seq/s    | on seq/s     | ratio | off c64/s    | on c64/s     | ratio |"
    );
    println!(
        "|----------|--------------|--------------|-------|--------------|--------------|-------|"
    );
    report("memory", &mem_off, &mem_on);
    if amqp {
        report("amqp", &amqp_off, &amqp_on);
    }
    println!("\non: JSON logs {logs}, metrics {metrics}; target: on / off >= 0.9");
}
