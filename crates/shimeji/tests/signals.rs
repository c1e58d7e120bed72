//! Graceful stop on SIGTERM and on Ctrl-C (SIGINT), in a child process: the
//! call in flight when the signal comes completes, then the services stop.
//!
//! The test re-runs its own binary as the child, selected by an environment
//! variable.

use shimeji::prelude::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CHILD: &str = "SHIMEJI_SIGNAL_TEST_CHILD";

struct Slow;

#[service(name = "slow")]
impl Slow {
    #[rpc]
    async fn work(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }
}

/// The child: serve, start a slow call, say "ready", wait for the signal.
fn child() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let running = ServiceRunner::with_config(Config::new())
            .service(Slow)
            .start()
            .await
            .unwrap();
        let client: SlowClient = running.client();
        let call = tokio::spawn(async move {
            let reply = client.work(1_000).await;
            println!("reply: {reply:?}");
        });
        let serving = tokio::spawn(running.run_until_signal());
        tokio::time::sleep(Duration::from_millis(100)).await;
        println!("ready");
        serving.await.unwrap();
        println!("stopped");
        call.await.unwrap();
    });
}

fn parent(test_name: &str, signal: &str) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.ends_with("ready") => break,
            Ok(line) => lines.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("the child never got ready ({e}): {lines:?}");
            }
        }
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("reply")),
        "the call must still be in flight when the signal comes: {lines:?}"
    );
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        lines.push(line);
    }
    let exit = child.wait().unwrap();
    assert!(exit.success(), "child exited with {exit}: {lines:?}");
    let reply = lines.iter().position(|l| l == "reply: Ok(1000)");
    let stopped = lines.iter().position(|l| l == "stopped");
    assert!(
        matches!((reply, stopped), (Some(r), Some(s)) if r < s),
        "the call in flight must complete before the stop returns: {lines:?}"
    );
}

#[test]
fn sigterm_drains_then_stops() {
    if std::env::var(CHILD).is_ok() {
        return child();
    }
    parent("sigterm_drains_then_stops", "TERM");
}

#[test]
fn ctrl_c_drains_then_stops() {
    if std::env::var(CHILD).is_ok() {
        return child();
    }
    parent("ctrl_c_drains_then_stops", "INT");
}
