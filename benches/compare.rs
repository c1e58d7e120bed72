//! Side-by-side comparison: shimeji's in-memory RPC against calling the
//! method directly and against Moleculer's local broker, in one run.
//!
//! ```text
//! cargo bench --bench compare              # 5 rounds, medians
//! ROUNDS=7 CALLS=200000 CALLS64=1000000 cargo bench --bench compare
//! CONTENDERS=current,moleculer cargo bench --bench compare
//! ```
//!
//! The headline is per core: shimeji on tokio's current-thread runtime (one
//! thread) against Node's one thread. shimeji on the multi-thread runtime
//! (one worker per core) is a row of its own. Moleculer runs from
//! `bench/moleculer` (its `run.sh` installs the pinned npm package on first
//! use), lean: no parameter schema, which shimeji's typed call does not check
//! at run time either; the row with its validator on is there for reference.
//!
//! Both sides time alike: calls per second come from a loop with no clock
//! reading per call, latencies from a second pass that reads the clock
//! twice per call. Every figure is the median of `ROUNDS` rounds; each round
//! runs every contender, so noise on the machine hits all alike. A
//! contender that fails in a round is reported as such, with how many rounds
//! its figures come from.

use shimeji::prelude::*;
use std::process::Command;
use std::time::Duration;

mod common;

use common::{
    concurrent, env_usize, latencies, median, medians, throughput, Figures, Greeter, GreeterClient,
};

/// Seconds of CPU this process has used (user and system, every thread),
/// as `getrusage` counts them: what a contender costs on a machine other
/// work shares, where its wall-clock rate moves with the load.
fn cpu_seconds() -> f64 {
    // SAFETY: `getrusage` only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` and a valid `who`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A round's figures and the calls per CPU-second of its two rates.
#[derive(Clone, Copy, Default)]
struct Round {
    wall: Figures,
    /// Calls per CPU-second, one at a time.
    seq_cpu: f64,
    /// Calls per CPU-second, 64 in flight.
    c64_cpu: f64,
}

/// What a round measures: calls one after another (`calls`, then as many
/// again for latencies unless `latency_calls` says otherwise) and calls with
/// 64 in flight (`calls64`).
#[derive(Clone, Copy)]
struct Work {
    calls: usize,
    latency_calls: usize,
    calls64: usize,
}

async fn measure_shimeji(work: Work, greeter: GreeterClient) -> Round {
    let call = || async {
        let reply = greeter.hello("Ada".into()).await.expect("call failed");
        std::hint::black_box(reply);
    };
    let cpu = cpu_seconds();
    let seq = throughput(work.calls, call).await;
    let seq_cpu = work.calls as f64 * 1.1 / (cpu_seconds() - cpu);
    let (p50, p99) = if work.latency_calls > 0 {
        latencies(work.latency_calls, call).await
    } else {
        (f64::NAN, f64::NAN)
    };
    let cpu = cpu_seconds();
    let c64 = concurrent(
        work.calls64,
        greeter.clone(),
        |g: GreeterClient| async move {
            let reply = g.hello("Ada".into()).await.expect("call failed");
            std::hint::black_box(reply);
            g
        },
    )
    .await;
    let c64_cpu = work.calls64 as f64 * 1.1 / (cpu_seconds() - cpu);
    Round {
        wall: Figures { seq, p50, p99, c64 },
        seq_cpu,
        c64_cpu,
    }
}

async fn measure_direct(work: Work) -> Round {
    let svc = Greeter;
    let call = || async {
        std::hint::black_box(svc.hello(std::hint::black_box("Ada".into())).await);
    };
    let cpu = cpu_seconds();
    let seq = throughput(work.calls, call).await;
    let seq_cpu = work.calls as f64 * 1.1 / (cpu_seconds() - cpu);
    let (p50, p99) = if work.latency_calls > 0 {
        latencies(work.latency_calls, call).await
    } else {
        (f64::NAN, f64::NAN)
    };
    let cpu = cpu_seconds();
    let c64 = concurrent(work.calls64, (), |()| async move {
        std::hint::black_box(Greeter.hello(std::hint::black_box("Ada".into())).await);
    })
    .await;
    let c64_cpu = work.calls64 as f64 * 1.1 / (cpu_seconds() - cpu);
    Round {
        wall: Figures { seq, p50, p99, c64 },
        seq_cpu,
        c64_cpu,
    }
}

fn measure_moleculer(work: Work, lean: bool) -> Result<Round, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/moleculer/run.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("CALLS", work.calls.to_string())
        .env("CALLS64", work.calls64.to_string())
        .env("ROUNDS", "1")
        .env("LEAN", if lean { "1" } else { "0" })
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bad output {line:?}: {e}"))?;
    let f = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| format!("missing {k} in {line}"))
    };
    Ok(Round {
        wall: Figures {
            seq: f("seq_calls_per_sec")?,
            p50: f("seq_p50_us")?,
            p99: f("seq_p99_us")?,
            c64: f("c64_calls_per_sec")?,
        },
        seq_cpu: f("seq_calls_per_cpu_sec")?,
        c64_cpu: f("c64_calls_per_cpu_sec")?,
    })
}

/// A runtime with a greeter running on it and a typed client to call it.
struct Served {
    rt: tokio::runtime::Runtime,
    running: shimeji::RunningServices,
    greeter: GreeterClient,
}

impl Served {
    fn start(rt: tokio::runtime::Runtime) -> Self {
        let (running, greeter) = rt.block_on(async {
            let running = ServiceRunner::with_config(Config::new())
                .service(Greeter)
                .start()
                .await
                .expect("start greeter");
            let greeter: GreeterClient = running.client();
            (running, greeter)
        });
        Served {
            rt,
            running,
            greeter,
        }
    }

    /// Measures on one of the runtime's own threads: a worker thread of a
    /// multi-thread runtime, the one thread of a current-thread one.
    fn measure(&self, work: Work) -> Round {
        let greeter = self.greeter.clone();
        self.rt.block_on(async move {
            tokio::spawn(measure_shimeji(work, greeter))
                .await
                .expect("bench task panicked")
        })
    }

    fn stop(self) {
        self.rt.block_on(self.running.stop());
    }
}

/// One contender's rounds: the figures of those that succeeded and the
/// errors of those that did not.
struct Contender {
    name: &'static str,
    settings: &'static str,
    key: &'static str,
    rounds: Vec<Round>,
    failures: Vec<String>,
}

impl Contender {
    fn new(key: &'static str, name: &'static str, settings: &'static str) -> Self {
        Contender {
            name,
            settings,
            key,
            rounds: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn record(&mut self, result: Result<Round, String>) {
        match result {
            Ok(f) => self.rounds.push(f),
            Err(e) => self.failures.push(e),
        }
    }

    fn figures(&self) -> Option<Figures> {
        let wall: Vec<Figures> = self.rounds.iter().map(|r| r.wall).collect();
        (!wall.is_empty()).then(|| medians(&wall))
    }

    /// Medians of the calls per CPU-second: one at a time, 64 in flight.
    fn per_cpu(&self) -> Option<(f64, f64)> {
        (!self.rounds.is_empty()).then(|| {
            (
                median(self.rounds.iter().map(|r| r.seq_cpu).collect()),
                median(self.rounds.iter().map(|r| r.c64_cpu).collect()),
            )
        })
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = env_usize("ROUNDS", if quick { 1 } else { 5 });
    let calls = env_usize("CALLS", if quick { 2_000 } else { 200_000 });
    let work = Work {
        calls,
        latency_calls: env_usize("LATENCY_CALLS", calls),
        calls64: env_usize("CALLS64", if quick { 5_000 } else { 1_000_000 }),
    };
    let default = if quick {
        "direct,current,multi"
    } else {
        "direct,current,multi,moleculer,moleculer-validated"
    };
    let wanted = std::env::var("CONTENDERS").unwrap_or_else(|_| default.to_string());
    let wants = |key: &str| wanted.split(',').any(|w| w.trim() == key);

    let mut direct = Contender::new("direct", "method called directly", "one thread");
    let mut current = Contender::new(
        "current",
        "shimeji typed client",
        "one thread (tokio current-thread)",
    );
    let mut moleculer = Contender::new(
        "moleculer",
        "Moleculer local broker",
        "Node's one thread, no parameter schema",
    );
    let mut multi = Contender::new(
        "multi",
        "shimeji typed client",
        "tokio multi-thread, one worker per core",
    );
    let mut validated = Contender::new(
        "moleculer-validated",
        "Moleculer local broker",
        "Node's one thread, schema {name: \"string\"} validated",
    );

    let one_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let served_current = wants("current").then(|| Served::start(one_thread()));
    let served_multi = wants("multi").then(|| {
        Served::start(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cores)
                .enable_all()
                .build()
                .expect("tokio runtime"),
        )
    });
    let direct_rt = wants("direct").then(one_thread);

    for round in 1..=rounds {
        if let Some(served) = &served_current {
            current.record(Ok(served.measure(work)));
        }
        if wants("moleculer") {
            moleculer.record(measure_moleculer(work, true));
        }
        if let Some(rt) = &direct_rt {
            direct.record(Ok(rt.block_on(measure_direct(work))));
        }
        if let Some(served) = &served_multi {
            multi.record(Ok(served.measure(work)));
        }
        if wants("moleculer-validated") {
            validated.record(measure_moleculer(work, false));
        }
        eprintln!("round {round}/{rounds} done");
    }
    for served in [served_current, served_multi].into_iter().flatten() {
        served.stop();
    }
    std::thread::sleep(Duration::from_millis(10));

    println!(
        "\nin-memory RPC, greeter.hello(\"Ada\"), medians of {rounds} round(s): {} calls one after another, {} more timed one by one for the latencies, {} with 64 in flight; {cores} cores\n",
        work.calls, work.latency_calls, work.calls64
    );
    println!("| contender | settings | calls/s one at a time | p50 µs | p99 µs | calls/s, 64 in flight | calls per CPU-second, one at a time / 64 in flight | rounds |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let all = [&direct, &current, &moleculer, &multi, &validated];
    for c in all {
        let (Some(f), Some((seq_cpu, c64_cpu))) = (c.figures(), c.per_cpu()) else {
            continue;
        };
        let failed = if c.failures.is_empty() {
            String::new()
        } else {
            format!(" ({} FAILED)", c.failures.len())
        };
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} / {:.0} | {}{failed} |",
            c.name,
            c.settings,
            f.seq,
            f.p50,
            f.p99,
            f.c64,
            seq_cpu,
            c64_cpu,
            c.rounds.len()
        );
    }
    for c in all {
        for e in &c.failures {
            println!("\n{} ({}) FAILED in a round: {e}", c.name, c.key);
        }
    }
    if let (Some(ours), Some(peer)) = (current.figures(), moleculer.figures()) {
        println!(
            "\nper core, shimeji / Moleculer: {:.2}x one at a time, {:.2}x with 64 in flight (target >= 1.5x)",
            ours.seq / peer.seq,
            ours.c64 / peer.c64,
        );
    }
    if let (Some(ours), Some(peer)) = (current.per_cpu(), moleculer.per_cpu()) {
        println!(
            "per CPU-second, shimeji / Moleculer: {:.2}x one at a time, {:.2}x with 64 in flight",
            ours.0 / peer.0,
            ours.1 / peer.1,
        );
    }
    if let (Some(ours), Some(peer)) = (multi.figures(), moleculer.figures()) {
        println!(
            "shimeji on {cores} threads / Moleculer on one: {:.2}x one at a time, {:.2}x with 64 in flight",
            ours.seq / peer.seq,
            ours.c64 / peer.c64,
        );
    }
    if let (Some(ours), Some(direct)) = (current.figures(), direct.figures()) {
        println!(
            "framework cost over a direct call, one thread: {:.0} ns per call one at a time, {:.0} ns with 64 in flight",
            1e9 / ours.seq - 1e9 / direct.seq,
            1e9 / ours.c64 - 1e9 / direct.c64,
        );
    }
}
