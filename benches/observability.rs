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
//! trace context (always carried; it is in both columns). Each round runs
//! both, each on services started fresh for it, off first then on; every
//! figure is the median of the rounds. The AMQP part needs the local broker
//! (`AMQP_URI`, default `amqp://guest:guest@127.0.0.1:5672`).

use shimeji::logging::LogFormat;
use shimeji::prelude::*;

mod common;

use common::{concurrent, env_usize, median, sequential, Greeter, GreeterClient};

#[derive(Clone, Copy, Default)]
struct Pair {
    seq: f64,
    c64: f64,
}

async fn measure(config: Config, calls: usize, calls64: usize) -> Pair {
    let running = ServiceRunner::with_config(config)
        .service(Greeter)
        .start()
        .await
        .expect("start greeter");
    let greeter: GreeterClient = running.client();
    let (seq, _, _) = sequential(calls, || async {
        std::hint::black_box(greeter.hello("Ada".into()).await.expect("call failed"));
    })
    .await;
    let c64 = concurrent(calls64, greeter.clone(), |g: GreeterClient| async move {
        std::hint::black_box(g.hello("Ada".into()).await.expect("call failed"));
        g
    })
    .await;
    running.stop().await;
    Pair { seq, c64 }
}

/// A runtime whose threads log through `dispatch` (or through nothing).
fn runtime(dispatch: Option<tracing::Dispatch>) -> tokio::runtime::Runtime {
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

    let json =
        shimeji::logging::subscriber("info", LogFormat::Json, std::io::sink).expect("log filter");
    let off_rt = runtime(None);
    let on_rt = runtime(Some(tracing::Dispatch::new(json)));

    let (mut mem_off, mut mem_on, mut amqp_off, mut amqp_on) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        shimeji::metrics::disable();
        mem_off.push(off_rt.block_on(measure(Config::new(), calls, calls64)));
        shimeji::metrics::enable();
        mem_on.push(on_rt.block_on(measure(Config::new(), calls, calls64)));
        if amqp {
            let config = Config::new().set("AMQP_URI", uri.clone());
            shimeji::metrics::disable();
            amqp_off.push(off_rt.block_on(measure(config.clone(), amqp_calls, amqp_calls64)));
            shimeji::metrics::enable();
            amqp_on.push(on_rt.block_on(measure(config, amqp_calls, amqp_calls64)));
        }
        eprintln!("round {round}/{rounds} done");
    }
    // Recording really was on: the scrape counts the calls.
    let scrape = shimeji::metrics::render();
    assert!(
        scrape.contains(
            r#"shimeji_entrypoint_calls_total{service="greeter",entrypoint="hello",outcome="ok"}"#
        ),
        "metrics were not recorded:\n{scrape}"
    );

    println!("\nobservability off vs on, greeter.hello(\"Ada\"), medians of {rounds} round(s)\n");
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
    println!("\ntarget: on / off >= 0.9");
}
