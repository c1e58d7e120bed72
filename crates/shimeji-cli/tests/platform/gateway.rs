//! A `shimeji gateway` process of one test, on a free loopback port,
//! following the test's etcd; stopped with SIGTERM (and its exit checked)
//! or killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shimeji::registry::Registry;

use super::haproxy::free_port;
use super::instance::temp_dir;

/// A running gateway.
pub struct Gateway {
    child: Child,
    dir: PathBuf,
    port: u16,
    /// The id it reports its applied revision under.
    pub id: String,
}

impl Gateway {
    /// Starts `shimeji gateway` on `registry_url` and waits until it has
    /// reported an applied revision and answers `/health`.
    pub async fn start(registry_url: &str, registry: &Registry) -> Gateway {
        let dir = temp_dir("gateway");
        let port = free_port();
        let id = format!("test-gateway-{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_shimeji"))
            .args(["gateway", "--registry", registry_url, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--workers", "2", "--id", &id, "--shutdown-grace", "5"])
            .args(["--log-level", "info"])
            .env_remove("RUST_LOG")
            .env_remove("REGISTRY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("gateway.log")).expect("the gateway's log"))
            .spawn()
            .expect("start shimeji gateway");
        let gateway = Gateway {
            child,
            dir,
            port,
            id,
        };
        let health = super::load::client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let routers = registry.routers().await.expect("read the routers");
            let reported = routers
                .iter()
                .any(|r| r.id == gateway.id && r.applied_revision > 0);
            let healthy = health
                .get(gateway.url("/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if reported && healthy {
                return gateway;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway never got ready: {routers:?}\n{}",
                gateway.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits until it exits; its exit status must be 0.
    pub fn stop(mut self) -> String {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status = self.child.wait().expect("the gateway exits");
        let log = self.log();
        assert!(status.success(), "the gateway exited with {status}:\n{log}");
        log
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
