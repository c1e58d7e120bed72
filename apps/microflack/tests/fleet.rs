//! An upgrade nobody notices, bounded: MicroFlack as a fleet of processes
//! (two instances of each service over RabbitMQ, the etcd registry, the
//! gateway, PostgreSQL), 20 Socket.IO clients posting and receiving and
//! 4 REST readers through the gateway, while `shimeji upgrade` rolls every
//! service, push included. Nothing may fail, be lost or go offline.
//!
//! It runs `fleet/upgrade-under-load.sh` with this build's binaries; the
//! script is also how to run it by hand, longer, and with the original's
//! upgrade sequence as a negative control.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const INSTALL: &str =
    "the fleet needs etcd and etcdctl (apt-get install etcd-server etcd-client), \
     psql and PostgreSQL on 127.0.0.1:5432, RabbitMQ on 127.0.0.1:5672 with rabbitmqctl, \
     and Node.js with socket.io-client (bash apps/microflack/tests/client/install.sh); \
     `bash .ci/run` installs and starts them all";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `shimeji`, built beside `microflack` by the workspace's test build.
fn shimeji_bin() -> PathBuf {
    let microflack = Path::new(env!("CARGO_BIN_EXE_microflack"));
    let shimeji = microflack.with_file_name(format!("shimeji{}", std::env::consts::EXE_SUFFIX));
    assert!(
        shimeji.exists(),
        "{} is missing: build it with `cargo build -p shimeji-cli --features etcd` \
         (the README's test command builds it)",
        shimeji.display()
    );
    shimeji
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "`{tool}` is not installed: {INSTALL}");
}

#[test]
fn every_service_rolls_under_socket_io_load_with_nothing_failed_or_lost() {
    for tool in [
        "etcd",
        "etcdctl",
        "psql",
        "rabbitmqctl",
        "node",
        "curl",
        "python3",
    ] {
        require(tool);
    }
    assert!(
        manifest_dir()
            .join("tests/client/node_modules/socket.io-client")
            .exists(),
        "socket.io-client is not installed: {INSTALL}"
    );
    let work = std::env::temp_dir().join(format!("microflack-fleet-test-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("a temporary folder");
    let summary = work.join("summary.json");
    let mut child = Command::new("bash")
        .arg(manifest_dir().join("fleet/upgrade-under-load.sh"))
        .env("MICROFLACK_BIN", env!("CARGO_BIN_EXE_microflack"))
        .env("SHIMEJI_BIN", shimeji_bin())
        .env("LOAD_CLIENTS", "20")
        .env("LOAD_READERS", "4")
        .env("SUMMARY", &summary)
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(work.join("out.log")).expect("a log file"))
        .stderr(std::fs::File::create(work.join("err.log")).expect("a log file"))
        .spawn()
        .expect("bash runs");
    // Bounded: the roll of ten instances takes well under a minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the script's status") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            // SIGTERM first: the script's exit trap stops the fleet (its
            // processes run detached and would outlive a SIGKILL).
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            for _ in 0..600 {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(work.join("out.log")).unwrap_or_default();
    let err = std::fs::read_to_string(work.join("err.log")).unwrap_or_default();
    let report = format!("--- output\n{out}\n--- errors\n{err}");
    let status = status.unwrap_or_else(|| panic!("the run took over 300 s\n{report}"));
    let summary: Value = std::fs::read_to_string(&summary)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| panic!("no summary (exit {status}): {INSTALL}\n{report}"));
    let _ = std::fs::remove_dir_all(&work);
    let number = |path: &str| {
        summary
            .pointer(path)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{path} missing in {summary}"))
    };
    assert_eq!(number("/http/failed"), 0, "failed HTTP requests\n{report}");
    assert!(
        number("/posts/posted") > 100,
        "too few posts to mean anything\n{report}"
    );
    assert_eq!(number("/posts/lost"), 0, "posts lost\n{report}");
    assert_eq!(
        number("/posts/socket_unacked"),
        0,
        "posts never acknowledged\n{report}"
    );
    assert_eq!(
        number("/delivery/missing_total"),
        0,
        "clients missed messages\n{report}"
    );
    assert_eq!(number("/offline_flips"), 0, "users went offline\n{report}");
    // Push was rolled: every client was cut once and came back.
    assert!(
        number("/sockets/reconnects") >= 20,
        "push did not roll?\n{report}"
    );
    assert!(out.contains("upgrade of push done"), "{report}");
    assert!(status.success(), "exit {status}\n{report}");
}
