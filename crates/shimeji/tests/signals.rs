//! Graceful stop on SIGTERM and on Ctrl-C (SIGINT), in a child process: the
//! call in flight when the signal comes completes, then the services stop.
//!
//! The child prints what happens in order: `started` (the call is in its
//! worker), `draining` (the signal was taken: the stage turned to draining),
//! the call's `reply`, then `stopped`. A drain is proven by that order: the
//! call started before the signal and answered after the drain began. A
//! signal taken only once the call was over, or a stop that does not wait
//! for it, breaks the order.
//!
//! The test re-runs its own binary as the child, selected by an environment
//! variable.

mod support;

use shimeji::health::Stage;
use shimeji::prelude::*;
use std::time::Duration;

const CHILD: &str = "SHIMEJI_SIGNAL_TEST_CHILD";

/// Told when the slow call is in its worker.
static STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[derive(Dependencies)]
struct Slow;

#[service(name = "slow")]
impl Slow {
    #[rpc]
    async fn work(&self, millis: u64) -> u64 {
        println!("started");
        STARTED.notify_one();
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }
}

/// The child: serve, start a slow call, say "ready" once it runs, wait for
/// the signal; say "draining" when the stage turns to draining.
fn child() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let running = ServiceRunner::with_config(Config::new())
            .service(Slow)
            .start()
            .await
            .unwrap();
        let client: SlowClient = running.client();
        let health = running.health();
        let call = tokio::spawn(async move {
            let reply = client.work(1_000).await;
            println!("reply: {reply:?}");
        });
        STARTED.notified().await;
        tokio::spawn(async move {
            while health.stage() == Stage::Serving {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            println!("draining");
        });
        let serving = tokio::spawn(running.run_until_signal());
        // "ready" only once the runner listens: a signal before that would
        // end the process the default way. (Bounded, where there is no /proc.)
        for _ in 0..300 {
            if catching_stop_signals() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        println!("ready");
        serving.await.unwrap();
        println!("stopped");
        call.await.unwrap();
    });
}

/// Whether this process has handlers for SIGINT and SIGTERM: bits 2 and 15
/// of the `SigCgt` mask in `/proc/self/status` (Linux).
fn catching_stop_signals() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (2 - 1)) != 0 && mask & (1 << (15 - 1)) != 0)
}

fn parent(test_name: &str, signal: &str) {
    let mut child = support::spawn_test(test_name, &[(CHILD, "1")]);
    let mut lines = child.wait_for("ready", Duration::from_secs(30), |l| l.ends_with("ready"));
    assert!(
        lines.iter().any(|l| l.ends_with("started")) && !lines.iter().any(|l| l.contains("reply")),
        "the call must be in its worker, unanswered, when the signal comes: {lines:?}"
    );
    assert!(child.signal(signal), "kill -{signal} failed");
    lines.extend(child.lines_until_quiet(Duration::from_secs(10)));
    let exit = child.process.wait().unwrap();
    assert!(exit.success(), "child exited with {exit}: {lines:?}");
    // libtest may print its own words before the child's first line.
    let at = |line: &str| lines.iter().position(|l| l.ends_with(line));
    let (started, draining, reply, stopped) = (
        at("started"),
        at("draining"),
        at("reply: Ok(1000)"),
        at("stopped"),
    );
    assert!(
        matches!((started, draining), (Some(s), Some(d)) if s < d),
        "the signal must come while the call runs: {lines:?}"
    );
    assert!(
        matches!((draining, reply), (Some(d), Some(r)) if d < r),
        "the call must answer after the drain began: {lines:?}"
    );
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
