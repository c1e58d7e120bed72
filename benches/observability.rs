//! What observability costs: calls/s with JSON logs and metrics on,
//! against the same calls with them off, in one run.
//!
//! ```text
//! cargo bench --bench observability                 # memory and AMQP, 5 rounds
//! ROUNDS=7 SKIP_AMQP=1 cargo bench --bench observability
//! ```
//!
//! The service is the same on both sides: `greeter.hello(name)` writes one
//! log line per call (`tracing::info!` in the method). *Off*: no log
//! subscriber, metrics not recorded. *On*: the JSON log subscriber at INFO
//! (what `--log-format json` installs) writing to a real file (a temporary
//! file, or `LOG_FILE`): blocking writes, one `write(2)` per line, no
//! buffering and no fsync, the way the subscriber writes to stderr;
//! Prometheus metrics recorded for entrypoints and clients. Trace context is
//! always carried, so it is in both columns. After each round the file must
//! hold exactly one `greeted` line per call the "on" side made, or the
//! bench fails; then it is emptied.
//!
//! In memory a third row, *write only*, takes the "off" side's calls and
//! follows each with one `write(2)` of a fixed JSON line of the same size
//! to the same file (no subscriber, no formatting, no metrics): the least
//! any logger that writes a line per call with blocking writes can cost,
//! to set the "on" row against (`SKIP_WRITE_ONLY=1` leaves it out; not
//! with `LOG_FORMAT=text`). Its lines are checked with the others.
//!
//! Each round starts both sides' services and takes `BATCHES` batches of
//! calls from each in turn (off, on, off, on, …) so that the machine's noise
//! hits both alike; every figure is the median of all batches. In memory
//! both sides share one runtime (the "on" side's calling tasks log through
//! the JSON subscriber, and the method runs in the calling task); over
//! AMQP, where service workers run in tasks of their own, each side has its
//! own runtime, the "on" one logging from every thread, and its own vhost
//! (`shimeji-bench-obs-off`, `shimeji-bench-obs-on`, added with
//! `rabbitmqctl`), so that each side's calls are served by its own service.
//! The AMQP part needs the local broker (`AMQP_BROKER`, default
//! `amqp://guest:guest@127.0.0.1:5672`, no vhost).

use shimeji::logging::LogFormat;
use shimeji::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::runtime::Runtime;

mod common;

use common::{concurrent_logged, env_usize, median, sequential};
use tracing::instrument::WithSubscriber;

/// The service both sides run: one log line per call.
#[derive(Default, Dependencies)]
struct Greeter;

#[service(name = "greeter")]
impl Greeter {
    #[rpc]
    async fn hello(&self, name: String) -> String {
        tracing::info!(name = name.as_str(), "greeted");
        format!("Hello, {name}!")
    }
}

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

/// How many calls one batch of `(calls, calls64)` makes, warm-up included
/// (a tenth of each, see `common`).
fn calls_in_batch((calls, calls64): (usize, usize)) -> usize {
    calls + calls / 10 + calls64 + calls64 / 10
}

/// What the "write only" side writes after each call: a JSON line of the
/// size the subscriber writes, made once. One `write(2)` of it is the least
/// a blocking logger that writes a line per call can cost.
const FIXED_LINE: &[u8] = b"{\"timestamp\":\"2026-11-28T06:00:00.000000Z\",\"level\":\"INFO\",\"target\":\"observability\",\"fields\":{\"message\":\"greeted\",\"name\":\"Ada\"},\"service\":\"greeter\",\"entrypoint\":\"hello\",\"call_id\":\"greeter.hello.5b1c7a3e-2f0d-4a8e-9c61-0d3f5e7a9b2c\",\"request_id\":\"greeter.hello.5b1c7a3e-2f0d-4a8e-9c61-0d3f5e7a9b2c\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":\"00f067aa0ba902b7\"}\n";

/// Writes [`FIXED_LINE`] to `file`, when given, with one `write(2)`.
fn write_fixed(file: Option<&std::fs::File>) {
    use std::io::Write;
    if let Some(mut file) = file {
        file.write_all(FIXED_LINE).expect("write the log file");
    }
}

/// One batch: `calls` one at a time, then `calls64` with 64 in flight;
/// every calling task logs through `logs` when given, and writes
/// [`FIXED_LINE`] to `fixed` after each call when given.
async fn batch(
    greeter: GreeterClient,
    calls: usize,
    calls64: usize,
    logs: Option<tracing::Dispatch>,
    fixed: Option<Arc<std::fs::File>>,
) -> Pair {
    let one_at_a_time = sequential(calls, || async {
        std::hint::black_box(greeter.hello("Ada".into()).await.expect("call failed"));
        write_fixed(fixed.as_deref());
    });
    let (seq, _, _) = match &logs {
        Some(logs) => one_at_a_time.with_subscriber(logs.clone()).await,
        None => one_at_a_time.await,
    };
    let c64 = concurrent_logged(
        calls64,
        (greeter.clone(), fixed),
        |(g, fixed): (GreeterClient, Option<Arc<std::fs::File>>)| async move {
            std::hint::black_box(g.hello("Ada".into()).await.expect("call failed"));
            write_fixed(fixed.as_deref());
            (g, fixed)
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
    /// Starts the "off" side with `configs.0`, the "on" side with `configs.1`.
    fn start(off_rt: &Runtime, on_rt: &Runtime, configs: (Config, Config), metrics: bool) -> Self {
        shimeji::metrics::disable();
        let off = off_rt.block_on(start(configs.0));
        if metrics {
            shimeji::metrics::enable();
        }
        let on = on_rt.block_on(start(configs.1));
        Sides { off, on }
    }

    /// Takes `n` batches of `(calls, calls64)` from each side, and from
    /// the "write only" side (the "off" side's calls, each followed by one
    /// write of [`FIXED_LINE`] to `fixed`) when `fixed` and `out.2` are
    /// given; returns how many calls the "on" side and the "write only"
    /// side made.
    fn batches(
        &self,
        rts: (&Runtime, &Runtime),
        metrics: bool,
        task_logs: Option<&tracing::Dispatch>,
        (n, calls, calls64): (usize, usize, usize),
        fixed: Option<&Arc<std::fs::File>>,
        out: (&mut Vec<Pair>, &mut Vec<Pair>, Option<&mut Vec<Pair>>),
    ) -> (usize, usize) {
        let run = |rt: &Runtime,
                   greeter: &GreeterClient,
                   logs: Option<&tracing::Dispatch>,
                   fixed: Option<&Arc<std::fs::File>>| {
            let greeter = greeter.clone();
            let logs = logs.cloned();
            let fixed = fixed.cloned();
            rt.block_on(async move {
                tokio::spawn(batch(greeter, calls, calls64, logs, fixed))
                    .await
                    .expect("bench task")
            })
        };
        let (off, on, mut write_only) = out;
        let write_only_too = fixed.is_some() && write_only.is_some();
        for _ in 0..n {
            // Clients record when recording is on: switch it per side.
            shimeji::metrics::disable();
            off.push(run(rts.0, &self.off.1, None, None));
            if let (Some(fixed), Some(out)) = (fixed, write_only.as_deref_mut()) {
                out.push(run(rts.0, &self.off.1, None, Some(fixed)));
            }
            if metrics {
                shimeji::metrics::enable();
            }
            on.push(run(rts.1, &self.on.1, task_logs, None));
        }
        let made = n * calls_in_batch((calls, calls64));
        (made, if write_only_too { made } else { 0 })
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

/// The log file: where the "on" side's lines go.
struct LogFile {
    path: PathBuf,
    /// JSON lines (else text).
    json: bool,
    /// Lines checked so far, all rounds.
    lines: usize,
}

impl LogFile {
    /// Creates (or empties) the file at `path`; returns it and the handle
    /// the subscriber writes through (append mode: each line lands at the
    /// end, also after the file is emptied).
    fn create(path: PathBuf, json: bool) -> (Self, std::fs::File) {
        std::fs::write(&path, b"").expect("create the log file");
        let writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open the log file");
        (
            LogFile {
                path,
                json,
                lines: 0,
            },
            writer,
        )
    }

    /// Another handle on the file, in append mode.
    fn appender(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .expect("open the log file")
    }

    /// Checks that the file holds exactly `expected` `greeted` lines, each
    /// naming its worker (JSON: an object whose `service` is the greeter;
    /// text: with the call id), then empties it.
    fn check_and_empty(&mut self, expected: usize, what: &str) {
        let text = std::fs::read_to_string(&self.path).expect("read the log file");
        let (mut greeted, mut other) = (0, 0);
        for line in text.lines() {
            let is_greeted = if self.json {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
                v["fields"]["message"] == "greeted"
                    && (v["service"] == "greeter"
                        || panic!("without the worker's identity: {line}"))
            } else {
                line.contains(" greeted ")
                    && (line.contains(" call_id=greeter.hello.")
                        || panic!("without the worker's identity: {line}"))
            };
            if is_greeted {
                greeted += 1;
            } else {
                if other < 3 {
                    eprintln!("{what}: another line: {line}");
                }
                other += 1;
            }
        }
        assert_eq!(
            greeted,
            expected,
            "{what}: {greeted} `greeted` lines in {}, {expected} calls made on the \"on\" side \
             (more lines than calls: requests served twice, redelivered after a lost connection \
             or a broker restart)",
            self.path.display()
        );
        eprintln!(
            "{what}: {greeted} `greeted` lines checked, {other} other lines ({} MB)",
            text.len() / 1_000_000
        );
        self.lines += greeted;
        std::fs::write(&self.path, b"").expect("empty the log file");
    }
}

fn report(name: &str, off: &[Pair], on: &[Pair]) {
    let m = |xs: &[Pair], f: fn(&Pair) -> f64| median(xs.iter().map(f).collect());
    let (off_seq, on_seq) = (m(off, |p| p.seq), m(on, |p| p.seq));
    let (off_c64, on_c64) = (m(off, |p| p.c64), m(on, |p| p.c64));
    println!(
        "| {name:<18} | {off_seq:>12.0} | {on_seq:>12.0} | {:>5.2} | {off_c64:>12.0} | {on_c64:>12.0} | {:>5.2} |",
        on_seq / off_seq,
        on_c64 / off_c64
    );
}

/// The vhosts of the "off" and "on" sides over AMQP: each side's greeter
/// has a queue of its own, so that no call is served by the other side.
const VHOSTS: [&str; 2] = ["shimeji-bench-obs-off", "shimeji-bench-obs-on"];

fn add_vhost(vhost: &str) {
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new("rabbitmqctl")
            .args(args)
            .output();
        assert!(
            out.is_ok_and(|o| o.status.success() || args[0] == "add_vhost"),
            "rabbitmqctl {args:?} failed: the AMQP part needs the local broker (SKIP_AMQP=1 skips it)"
        );
    };
    ctl(&["add_vhost", vhost]);
    ctl(&["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]);
}

/// The 1-minute load average, from /proc/loadavg.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rabbit = std::process::Command::new("rabbitmqctl")
        .arg("version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!("{cores} cores, RabbitMQ {rabbit} on the same machine")
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let load_at_start = load_average();
    let rounds = env_usize("ROUNDS", if quick { 1 } else { 5 });
    let calls = env_usize("CALLS", if quick { 2_000 } else { 100_000 });
    let calls64 = env_usize("CALLS64", if quick { 5_000 } else { 500_000 });
    let amqp_calls = env_usize("AMQP_CALLS", if quick { 200 } else { 5_000 });
    let amqp_calls64 = env_usize("AMQP_CALLS64", if quick { 500 } else { 20_000 });
    let amqp = std::env::var("SKIP_AMQP").is_err();
    let broker = std::env::var("AMQP_BROKER")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_string());
    if amqp {
        for vhost in VHOSTS {
            add_vhost(vhost);
        }
    }

    // ON_LOGS=0 or ON_METRICS=0 leave one part off in the "on" column, to
    // see what each costs.
    let logs = env_usize("ON_LOGS", 1) == 1;
    let metrics = env_usize("ON_METRICS", 1) == 1;
    let path = std::env::var_os("LOG_FILE").map_or_else(
        || std::env::temp_dir().join(format!("shimeji-bench-{}.log", std::process::id())),
        PathBuf::from,
    );
    // LOG_FORMAT=text: the text lines instead, to compare formatters.
    let text = std::env::var("LOG_FORMAT").is_ok_and(|f| f == "text");
    let (mut file, writer) = LogFile::create(path, !text);
    // The "write only" side (memory, JSON only): the least a line per call
    // costs when it is written with one blocking write(2).
    let fixed =
        (!text && std::env::var("SKIP_WRITE_ONLY").is_err()).then(|| Arc::new(file.appender()));
    let format = if text {
        LogFormat::Text
    } else {
        LogFormat::Json
    };
    let json = tracing::Dispatch::new(
        shimeji::logging::subscriber("info", format, writer).expect("log filter"),
    );
    // With one subscriber only, `tracing` decides whether a log statement is
    // enabled for good from the thread that first reaches it: the "off"
    // side, with no subscriber, would switch `greeted` off for the "on"
    // side too. A second, empty subscriber makes it ask every subscriber
    // there is (a program with one global subscriber has no such problem;
    // the "off" side pays one check of its empty default per line).
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let on_logs = logs.then_some(&json);
    let off_rt = runtime(None);
    let on_rt = runtime(on_logs.cloned());

    let (mut mem_off, mut mem_on, mut amqp_off, mut amqp_on) = (vec![], vec![], vec![], vec![]);
    let mut mem_write_only = vec![];
    let rts = (&off_rt, &on_rt);
    let batches = env_usize("BATCHES", if quick { 1 } else { 10 });
    let expect = |made: usize| if logs { made } else { 0 };
    for round in 1..=rounds {
        // In memory a call runs in its caller's task: one runtime for both.
        let sides = Sides::start(&off_rt, &off_rt, (Config::new(), Config::new()), metrics);
        let (made, written) = sides.batches(
            (&off_rt, &off_rt),
            metrics,
            on_logs,
            (batches, calls / batches, calls64 / batches),
            fixed.as_ref(),
            (&mut mem_off, &mut mem_on, Some(&mut mem_write_only)),
        );
        sides.stop(&off_rt, &off_rt);
        file.check_and_empty(expect(made) + written, &format!("round {round}, memory"));
        if amqp {
            let config = |vhost: &str| Config::new().set("AMQP_URI", format!("{broker}/{vhost}"));
            let configs = (config(VHOSTS[0]), config(VHOSTS[1]));
            let sides = Sides::start(&off_rt, &on_rt, configs, metrics);
            let (made, _) = sides.batches(
                rts,
                metrics,
                None,
                (batches, amqp_calls / batches, amqp_calls64 / batches),
                None,
                (&mut amqp_off, &mut amqp_on, None),
            );
            sides.stop(&off_rt, &on_rt);
            file.check_and_empty(expect(made), &format!("round {round}, AMQP"));
        }
        eprintln!("round {round}/{rounds} done");
    }
    let _ = std::fs::remove_file(&file.path);
    // Recording really was on: the scrape counts the calls.
    let scrape = shimeji::metrics::render();
    assert!(
        !metrics ||
        scrape.contains(
            r#"shimeji_entrypoint_calls_total{service="greeter",entrypoint="hello",outcome="ok"}"#
        ),
        "metrics were not recorded:\n{scrape}"
    );

    println!("\nmachine: {}", machine());
    println!(
        "load average (1 min, other work on the machine included): {load_at_start} at the start, {} at the end",
        load_average()
    );
    println!(
        "command: ROUNDS={rounds} BATCHES={batches} CALLS={calls} CALLS64={calls64} \
         AMQP_CALLS={amqp_calls} AMQP_CALLS64={amqp_calls64} ON_LOGS={} ON_METRICS={}{}{} \
         cargo bench --bench observability",
        u8::from(logs),
        u8::from(metrics),
        if amqp { "" } else { " SKIP_AMQP=1" },
        if text { " LOG_FORMAT=text" } else { "" }
    );
    println!(
        "off: no log subscriber, no metrics. on: {}; metrics {}",
        if logs {
            format!(
                "{} logs, one line per call to a file (blocking writes, one write(2) per line), \
                 {} lines written and checked",
                if text { "text" } else { "JSON" },
                file.lines
            )
        } else {
            "no logs".to_string()
        },
        if metrics { "recorded" } else { "OFF" }
    );
    println!("\nobservability off vs on, greeter.hello(\"Ada\"), medians of {rounds} round(s) x {batches} batches\n");
    println!(
        "| transport          | off seq/s    | on seq/s     | ratio | off c64/s    | on c64/s     | ratio |"
    );
    println!(
        "|--------------------|--------------|--------------|-------|--------------|--------------|-------|"
    );
    report("memory", &mem_off, &mem_on);
    if !mem_write_only.is_empty() {
        report("memory, write only", &mem_off, &mem_write_only);
    }
    if amqp {
        report("amqp", &amqp_off, &amqp_on);
    }
    if !mem_write_only.is_empty() {
        println!(
            "\nmemory, write only: the \"off\" side's calls, each followed by one write(2) of a \
             fixed {}-byte JSON line to the same file (no subscriber, no formatting, no metrics): \
             the least any blocking logger writing a line per call can cost",
            FIXED_LINE.len()
        );
    }
    println!("\ntarget: on / off >= 0.9");
}
