//! Shared by the tests that need RabbitMQ: a virtual host of each test
//! binary's run, and a clear failure when no broker is reachable.
//!
//! A run's virtual host is `<prefix>-<pid>-<random>`, so two runs on one
//! broker never share (or delete) one; it is deleted when the binary exits,
//! whether its tests passed or failed.
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

/// An AMQP URI on a virtual host of this run, `<prefix>-<pid>-<random>`,
/// deleted when the test binary exits.
pub fn fresh_vhost(prefix: &str) -> String {
    extern "C" {
        fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
    }
    static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    extern "C" fn delete_created() {
        let vhosts = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|p| p.into_inner()));
        for vhost in vhosts {
            let _ = Command::new("rabbitmqctl")
                .args(["delete_vhost", &vhost])
                .output();
        }
    }
    require_broker();
    let vhost = format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    ctl(&["add_vhost", &vhost]);
    ctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let mut created = CREATED.lock().unwrap_or_else(|p| p.into_inner());
    if created.is_empty() {
        // SAFETY: registers a plain function with no arguments, once per
        // process; libtest's exit (pass or fail) runs it.
        unsafe { atexit(delete_created) };
    }
    created.push(vhost.clone());
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
