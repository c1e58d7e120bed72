//! What the platform tests share: a throwaway etcd and HAProxy, instances
//! of an HTTP service in processes of their own, a `shimeji haproxy-sync`
//! process, and keep-alive clients.
#![allow(dead_code)]

#[path = "../../../shimeji/tests/support/etcd.rs"]
pub mod etcd;
pub mod gateway;
pub mod haproxy;
pub mod instance;
pub mod load;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shimeji::registry::Registry;

/// A `shimeji haproxy-sync` process, killed (and its log removed) when
/// dropped.
pub struct Sync {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Sync {
    /// Starts `shimeji haproxy-sync` for `haproxy` on `registry`, with
    /// `extra` arguments, and waits until it reported as a router.
    pub async fn start(
        registry_url: &str,
        registry: &Registry,
        haproxy: &haproxy::Haproxy,
        extra: &[&str],
    ) -> Sync {
        let dir = instance::temp_dir("haproxy-sync");
        let log = dir.join("sync.log");
        let child = Command::new(env!("CARGO_BIN_EXE_shimeji"))
            .args([
                "haproxy-sync",
                "--registry",
                registry_url,
                "--haproxy-socket",
            ])
            .arg(haproxy.socket())
            .args(["--resync", "0.2", "--log-level", "info,shimeji=debug"])
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("REGISTRY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the sync's log"))
            .spawn()
            .expect("start shimeji haproxy-sync");
        let sync = Sync { child, dir, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let routers = registry.routers().await.expect("read the routers");
            if routers.iter().any(|r| r.applied_revision > 0) {
                return sync;
            }
            assert!(
                Instant::now() < deadline,
                "haproxy-sync never reported: {routers:?}\n{}",
                sync.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits until it exits; its exit status must be 0.
    pub fn stop(mut self) -> String {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status = self.child.wait().expect("haproxy-sync exits");
        let log = self.log();
        assert!(
            status.success(),
            "haproxy-sync exited with {status}:\n{log}"
        );
        log
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` every 20 ms until it holds; fails saying `what` after
/// `within`.
pub async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
