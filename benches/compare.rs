//! Side-by-side comparison: shimeji's in-memory RPC against calling the
//! method directly and against Moleculer's local broker, in one run.
//!
//! ```text
//! cargo bench --bench compare              # 3 rounds, medians
//! ROUNDS=5 CALLS=200000 cargo bench --bench compare
//! ```
//!
//! Moleculer runs from `bench/moleculer` (its `run.sh` installs the pinned
//! npm package on first use). Every figure is the median of `ROUNDS` rounds;
//! each round runs every contender, so noise on the machine hits all alike.

use shimeji::prelude::*;
use std::process::Command;
use std::time::Duration;

mod common;

use common::{concurrent, env_usize, medians, sequential, Figures, Greeter, GreeterClient};

async fn measure_shimeji(calls: usize, calls64: usize, greeter: &GreeterClient) -> Figures {
    let (seq, p50, p99) = sequential(calls, || async {
        let reply = greeter.hello("Ada".into()).await.expect("call failed");
        std::hint::black_box(reply);
    })
    .await;
    let c64 = concurrent(calls64, greeter.clone(), |g: GreeterClient| async move {
        let reply = g.hello("Ada".into()).await.expect("call failed");
        std::hint::black_box(reply);
        g
    })
    .await;
    Figures { seq, p50, p99, c64 }
}

async fn measure_direct(calls: usize, calls64: usize) -> Figures {
    let svc = Greeter;
    let (seq, p50, p99) = sequential(calls, || async {
        std::hint::black_box(svc.hello(std::hint::black_box("Ada".into())).await);
    })
    .await;
    let c64 = concurrent(calls64, (), |()| async move {
        std::hint::black_box(Greeter.hello(std::hint::black_box("Ada".into())).await);
    })
    .await;
    Figures { seq, p50, p99, c64 }
}

fn measure_moleculer(calls: usize, calls64: usize) -> Result<Figures, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/moleculer/run.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("CALLS", calls.to_string())
        .env("CALLS64", calls64.to_string())
        .env("ROUNDS", "1")
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
    Ok(Figures {
        seq: f("seq_calls_per_sec")?,
        p50: f("seq_p50_us")?,
        p99: f("seq_p99_us")?,
        c64: f("c64_calls_per_sec")?,
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = env_usize("ROUNDS", if quick { 1 } else { 3 });
    let calls = env_usize("CALLS", if quick { 2_000 } else { 200_000 });
    let calls64 = env_usize("CALLS64", if quick { 5_000 } else { 1_000_000 });
    let with_peer = !quick && std::env::var("SKIP_MOLECULER").is_err();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (running, greeter) = rt.block_on(async {
        let running = ServiceRunner::with_config(Config::new())
            .service(Greeter)
            .start()
            .await
            .expect("start greeter");
        let greeter: GreeterClient = running.client();
        (running, greeter)
    });

    let mut ours = Vec::new();
    let mut direct = Vec::new();
    let mut peer = Vec::new();
    let mut peer_error = None;
    for round in 1..=rounds {
        ours.push(rt.block_on(measure_shimeji(calls, calls64, &greeter)));
        direct.push(rt.block_on(measure_direct(calls, calls64)));
        if with_peer {
            match measure_moleculer(calls, calls64) {
                Ok(f) => peer.push(f),
                Err(e) => peer_error = Some(e),
            }
        }
        eprintln!("round {round}/{rounds} done");
    }
    rt.block_on(running.stop());
    std::thread::sleep(Duration::from_millis(10));

    let ours = medians(&ours);
    let direct = medians(&direct);
    let row = |name: &str, f: &Figures| {
        println!(
            "| {name:<28} | {:>12.0} | {:>8.2} | {:>8.2} | {:>12.0} |",
            f.seq, f.p50, f.p99, f.c64
        )
    };
    println!("\nin-memory RPC, greeter.hello(\"Ada\"), medians of {rounds} round(s): {calls} sequential calls, {calls64} with 64 in flight\n");
    println!(
        "| contender                    | seq calls/s  | p50 µs   | p99 µs   | c64 calls/s  |"
    );
    println!(
        "|------------------------------|--------------|----------|----------|--------------|"
    );
    row("method called directly", &direct);
    row("shimeji typed client", &ours);
    if !peer.is_empty() {
        let peer = medians(&peer);
        row("moleculer local broker", &peer);
        println!(
            "\nshimeji / moleculer: {:.2}x sequential, {:.2}x with 64 in flight (target >= 1.5x); shimeji p50 {:.2} µs (target <= 2 µs)",
            ours.seq / peer.seq,
            ours.c64 / peer.c64,
            ours.p50
        );
    } else if let Some(e) = peer_error {
        println!("\nmoleculer: NOT MEASURED: {e}");
    }
    println!(
        "framework cost over a direct call: {:.2} µs per call at p50 (sequential), {:.1}x the direct call's time with 64 in flight",
        ours.p50 - direct.p50,
        direct.c64 / ours.c64
    );
}
