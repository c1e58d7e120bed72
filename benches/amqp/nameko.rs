//! The Nameko contenders: `nameko run` of the bench's echo service
//! (`interop/bench_service.py`), Nameko's `ClusterRpcProxy` as a client
//! (`interop/bench_nameko.py`), and the start-up and idle memory of a
//! greeter process.

use serde_json::{json, Value};
use shimeji::prelude::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Figures;
use crate::wire::uri;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// How Nameko's client keeps 64 calls in flight (see `interop/bench_nameko.py`):
/// `pool:N` (N `ClusterRpcProxy` shared by 64 green threads), `window`, or
/// `driver` (a Nameko service calling); `pool:NxK` splits the 64 over K
/// client processes.
#[derive(Clone, Debug)]
pub struct ClientSetup {
    /// `C64_MODE`.
    pub mode: String,
    /// `C64_PROCS`: client processes sharing the 64 in flight.
    pub procs: usize,
}

impl ClientSetup {
    /// `pool:16`, `pool:8x2`, `window`, `driver`.
    pub fn parse(text: &str) -> Self {
        match text.rsplit_once('x') {
            Some((mode, procs)) if procs.parse::<usize>().is_ok() => ClientSetup {
                mode: mode.to_string(),
                procs: procs.parse().unwrap_or(1),
            },
            _ => ClientSetup {
                mode: text.to_string(),
                procs: 1,
            },
        }
    }

    /// What a reader needs to know, next to the figures.
    pub fn describe(&self) -> String {
        let how = match self.mode.strip_prefix("pool:") {
            Some(n) => format!("64 green threads over {n} ClusterRpcProxy"),
            None if self.mode == "driver" => {
                "64 green threads in a Nameko service worker, one RpcProxy".to_string()
            }
            None if self.mode == "window" => "a call_async window of 64 on one proxy".to_string(),
            None => format!("C64_MODE={}", self.mode),
        };
        if self.procs > 1 {
            format!("{how}, in {} processes", self.procs)
        } else {
            how
        }
    }
}

/// The venv's python, installed by `interop/setup.sh` when missing.
pub fn python() -> Result<String, String> {
    let out = Command::new("bash")
        .arg(format!("{ROOT}/interop/setup.sh"))
        .output()
        .map_err(|e| format!("cannot run interop/setup.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "interop/setup.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// Runs `interop/bench_nameko.py` against `service`.
pub fn bench(
    python: &str,
    service: &str,
    (calls, calls64): (usize, usize),
    setup: &ClientSetup,
) -> Result<Figures, String> {
    let out = Command::new(python)
        .arg(format!("{ROOT}/interop/bench_nameko.py"))
        .arg(service)
        .env("AMQP_URI", uri())
        .env("CALLS", calls.to_string())
        .env("CALLS64", calls64.to_string())
        .env("C64_MODE", &setup.mode)
        .env("C64_PROCS", setup.procs.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .map_err(|e| format!("{e}: {text}"))?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Figures {
        seq: f("seq_calls_per_sec"),
        p50: f("seq_p50_us"),
        p99: f("seq_p99_us"),
        c64: f("c64_calls_per_sec"),
    })
}

/// `nameko run` of `module` from `interop/` with `config`, extra
/// environment `env`.
pub fn run(python: &str, module: &str, config: &str, env: &[(&str, String)]) -> Child {
    let nameko = std::path::Path::new(python).with_file_name("nameko");
    let mut command = Command::new(nameko);
    command
        .args(["run", "--config", config, module])
        .current_dir(format!("{ROOT}/interop"))
        .env("AMQP_URI", uri())
        .env("PYTHONWARNINGS", "ignore")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("nameko run")
}

/// Stops a child with SIGTERM and waits for it.
pub fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Starts a greeter process, polls `greeter.hello` until it answers; returns
/// (time to first reply, idle RSS after a second).
pub async fn start_to_reply(client: &Client, child: Child) -> Result<(Duration, u64), String> {
    let start = Instant::now();
    loop {
        let quick = client.with_timeout(Duration::from_millis(200));
        if quick
            .call("greeter", "hello", json!({"name": "Ada"}))
            .await
            .is_ok()
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            stop(child);
            return Err("the greeter never answered".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(child.id());
    stop(child);
    Ok((took, rss))
}

/// Builds the greeter example with the bench's own profile (optimized as
/// release; building it `--release` would rebuild the dependencies the
/// bench shares with it, each time, for their other features) and returns
/// its path.
pub fn build_greeter() -> Result<String, String> {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // Without the variables `cargo bench` sets for the bench, which build
    // scripts (ring's) would see as a change and rebuild for.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let ours = key == "CARGO_HOME" || key == "CARGO_TARGET_DIR";
        if (key.starts_with("CARGO") && !ours) || key == "LD_LIBRARY_PATH" || key == "OUT_DIR" {
            cargo.env_remove(&*key);
        }
    }
    let status = cargo
        .args(["build", "--profile", "bench", "--example", "greeter"])
        .current_dir(ROOT)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("cargo build --profile bench --example greeter failed".into());
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{ROOT}/target"));
    Ok(format!("{target}/release/examples/greeter"))
}

/// Starts the Nameko side: a `pybench{w}` echo service per `max_workers`
/// in `workers`, each in a `nameko run` of its own, and the `pydriver`
/// service; waits until they had time to connect.
pub fn start_services(python: &str, workers: &[u16]) -> Vec<Child> {
    let mut children: Vec<Child> = workers
        .iter()
        .map(|w| {
            let env = [
                ("BENCH_SERVICE", format!("pybench{w}")),
                ("NAMEKO_MAX_WORKERS", w.to_string()),
            ];
            run(python, "bench_service", "bench_config.yaml", &env)
        })
        .collect();
    // Its reply consumer's prefetch is max_workers: above 64 in flight.
    let env = [("NAMEKO_MAX_WORKERS", "128".to_string())];
    children.push(run(python, "bench_driver", "bench_config.yaml", &env));
    std::thread::sleep(Duration::from_secs(4));
    children
}
