//! Shared by the tests that need RabbitMQ: a virtual host of each test
//! binary's own, and a clear failure when no broker is reachable.
#![allow(dead_code)]

use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

/// The broker the tests use.
pub const BROKER: &str = "127.0.0.1:5672";

/// Runs `rabbitmqctl`, failing the test with its error.
pub fn ctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run rabbitmqctl: {e}"));
    assert!(
        out.status.success(),
        "rabbitmqctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails the test with instructions when RabbitMQ is not reachable.
pub fn require_broker() {
    if TcpStream::connect_timeout(&BROKER.parse().expect("address"), Duration::from_secs(2))
        .is_err()
    {
        panic!(
            "RabbitMQ is not reachable at {BROKER}. Start it with \
             `rabbitmq-server -detached && rabbitmqctl await_startup`."
        );
    }
}

/// An AMQP URI on virtual host `vhost`, created fresh (anything an earlier
/// run left is deleted with it).
pub fn fresh_vhost(vhost: &str) -> String {
    require_broker();
    let _ = Command::new("rabbitmqctl")
        .args(["delete_vhost", vhost])
        .output();
    ctl(&["add_vhost", vhost]);
    ctl(&["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]);
    format!("amqp://guest:guest@{BROKER}/{vhost}")
}

/// What a run of the `shimeji` binary printed, and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the `shimeji` binary with `args`, without AMQP_URI or RUST_LOG from
/// the test's environment.
pub fn shimeji(args: &[&str]) -> Run {
    Command::new(env!("CARGO_BIN_EXE_shimeji"))
        .args(args)
        .env_remove("AMQP_URI")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the shimeji binary")
        .into()
}
