//! Interoperation with real Python Nameko 2.14.1 (installed from PyPI into
//! `interop/.venv` by `interop/setup.sh`), run as a real `nameko run`
//! process: RPC both ways, events both ways for each handler type, and the
//! call id stack across Python → Rust → Python.
//!
//! One test, so that one Nameko process serves every step.

mod support;

use serde_json::{json, Value};
use shimeji::context;
use shimeji::prelude::*;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INTEROP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../interop");

#[derive(Debug, thiserror::Error, Exception)]
#[error("rust says no")]
struct Boom;

#[derive(Default, Dependencies)]
struct RustEcho {
    python: Client,
}

#[service(name = "rustecho")]
impl RustEcho {
    #[rpc]
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    #[rpc]
    async fn fail(&self) -> Result<(), Boom> {
        Err(Boom)
    }

    /// What a Python caller looks like from here.
    #[rpc]
    async fn whoami(&self) -> Value {
        let ctx = context::current().expect("worker context");
        json!({
            "call_id_stack": ctx.call_id_stack(),
            "user_id": ctx.user_id(),
            "language": ctx.language(),
            "trace_id": ctx.trace_id(),
            "parent_span_id": ctx.parent_span_id(),
        })
    }

    /// Rust → Python → Rust: the trace context crosses the Python hop in
    /// the `nameko.traceparent` header, which Nameko passes on.
    #[rpc]
    async fn trace_through_python(&self) -> Result<Value, CallError> {
        let ctx = context::current().expect("worker context");
        let via = self
            .python
            .call("pyrelay", "relay_to_rust", json!({}))
            .await?;
        Ok(json!({"trace_id": ctx.trace_id(), "span_id": ctx.span_id(), "via": via}))
    }

    /// Python → Rust → Python: calls `pyecho.whoami` and returns what it saw.
    #[rpc]
    async fn relay(&self) -> Result<Value, CallError> {
        self.python.call("pyecho", "whoami", json!({})).await
    }
}

support::event_log_service!(
    PoolListener,
    "rust_pool",
    "service_pool",
    on_ping,
    "pyevents",
    "ping",
    handler_type = "service_pool"
);
support::event_log_service!(
    SingleListener,
    "rust_single",
    "singleton",
    on_ping,
    "pyevents",
    "ping",
    handler_type = "singleton"
);
support::event_log_service!(
    BroadcastListener,
    "rust_broadcast",
    "broadcast",
    on_ping,
    "pyevents",
    "ping",
    handler_type = "broadcast"
);

/// Kills `nameko run` when the test ends, however it ends.
struct Nameko(Child);

impl Drop for Nameko {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn python() -> String {
    let out = Command::new("bash")
        .arg(format!("{INTEROP}/setup.sh"))
        .output()
        .expect("run interop/setup.sh");
    assert!(
        out.status.success(),
        "interop/setup.sh failed (it installs Nameko from PyPI into interop/.venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Runs `interop/client.py`; (exit code, its JSON output).
fn py_client(python: &str, uri: &str, args: &[&str]) -> (i32, Value) {
    let out = Command::new(python)
        .arg(format!("{INTEROP}/client.py"))
        .args(args)
        .env("AMQP_URI", uri)
        .output()
        .expect("run client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "client.py {args:?} printed {stdout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out.status.code().unwrap_or(-1), value)
}

async fn eventually<F: Fn() -> bool>(what: &str, within: Duration, check: F) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nameko_and_shimeji_interoperate() {
    let uri = support::amqp_uri("interop");
    let python = python();
    let nameko_bin = std::path::Path::new(&python).with_file_name("nameko");
    let _nameko = Nameko(
        Command::new(nameko_bin)
            .args(["run", "--config", "config.yaml", "services"])
            .current_dir(INTEROP)
            .env("AMQP_URI", &uri)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nameko run"),
    );

    let log: support::EventLog = Arc::default();
    let mut runner = ServiceRunner::with_config(Config::new().set("AMQP_URI", uri.clone()))
        .service(RustEcho::default());
    for instance in 0..2 {
        runner = runner
            .service(PoolListener {
                instance,
                log: log.clone(),
            })
            .service(SingleListener {
                instance,
                log: log.clone(),
            })
            .service(BroadcastListener {
                instance,
                log: log.clone(),
            });
    }
    let running = runner
        .start()
        .await
        .expect("shimeji services start on RabbitMQ");
    let client = running.dynamic_client();

    // Wait for Nameko to serve.
    let start = Instant::now();
    loop {
        match client
            .with_timeout(Duration::from_secs(1))
            .call("pyecho", "echo", json!(["up?"]))
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(30),
                "nameko run never served pyecho: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 1. Python ClusterRpcProxy → shimeji: positional, keyword, errors.
    assert_eq!(
        py_client(&python, &uri, &["call", "rustecho", "add", "[1, 2]", "{}"]),
        (0, json!(3))
    );
    assert_eq!(
        py_client(
            &python,
            &uri,
            &["call", "rustecho", "add", "[]", "{\"a\": 4, \"b\": 5}"]
        ),
        (0, json!(9))
    );
    let (code, err) = py_client(&python, &uri, &["call", "rustecho", "fail", "[]", "{}"]);
    assert_eq!(
        (code, &err["error"]["exc_type"]),
        (3, &json!("Boom")),
        "{err}"
    );
    assert_eq!(err["error"]["value"], "rust says no");
    let (code, err) = py_client(&python, &uri, &["call", "rustecho", "nope", "[]", "{}"]);
    assert_eq!(
        (code, &err["error"]["exc_type"]),
        (3, &json!("MethodNotFound")),
        "{err}"
    );
    let (code, err) = py_client(&python, &uri, &["call", "rustecho", "add", "[1]", "{}"]);
    assert_eq!(
        (code, &err["error"]["exc_type"]),
        (3, &json!("IncorrectSignature")),
        "{err}"
    );

    // 2. shimeji client → Python service: results, remote errors, unknown service.
    assert_eq!(
        client
            .call("pyecho", "echo", json!({"value": {"a": [1, "é"]}}))
            .await
            .unwrap(),
        json!({"a": [1, "é"]})
    );
    assert_eq!(
        client.call("pyecho", "add", json!([2, 3])).await.unwrap(),
        json!(5)
    );
    let err = client.call("pyecho", "fail", json!([])).await.unwrap_err();
    assert!(err.is("Oops"), "{err:?}");
    assert_eq!(err.remote().unwrap().exc_path, "services.Oops");
    let err = client.call("pyecho", "add", json!([1])).await.unwrap_err();
    assert!(matches!(err, CallError::IncorrectSignature(_)), "{err:?}");
    let started = Instant::now();
    let err = client
        .call("nobody_serves_this", "x", json!([]))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::UnknownService(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // 3. A Python event reaches shimeji handlers of each type (two instances each).
    let (code, _) = py_client(
        &python,
        &uri,
        &["dispatch", "pyevents", "ping", "{\"n\": 1}"],
    );
    assert_eq!(code, 0);
    eventually(
        "python event handled by shimeji",
        Duration::from_secs(10),
        || log.lock().unwrap().len() >= 4,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = log.lock().unwrap().clone();
    let count = |kind: &str| {
        seen.iter()
            .filter(|(k, _, p)| *k == kind && p["n"] == 1)
            .count()
    };
    assert_eq!(
        (
            count("service_pool"),
            count("singleton"),
            count("broadcast")
        ),
        (1, 1, 2),
        "{seen:?}"
    );

    // 4. A shimeji event reaches Nameko handlers of each type.
    assert_eq!(
        client.call("pyevents", "reset", json!([])).await.unwrap(),
        json!(true)
    );
    running
        .event_dispatcher("rustevents")
        .dispatch("ping", json!({"from": "rust"}))
        .await
        .unwrap();
    let mut received = Value::Null;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        received = client
            .call("pyevents", "received", json!([]))
            .await
            .unwrap();
        if ["service_pool", "singleton", "broadcast"]
            .iter()
            .all(|k| received[k].as_array().is_some_and(|a| !a.is_empty()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for kind in ["service_pool", "singleton", "broadcast"] {
        assert_eq!(
            received[kind],
            json!([{"from": "rust"}]),
            "{kind}: {received}"
        );
    }

    // 5. call_id_stack and context data across Python → Rust → Python.
    let (code, seen) = py_client(
        &python,
        &uri,
        &[
            "call",
            "rustecho",
            "relay",
            "[]",
            "{}",
            "--context",
            "{\"user_id\": \"u-42\", \"language\": \"fr\"}",
        ],
    );
    assert_eq!(code, 0, "{seen}");
    let stack: Vec<&str> = seen["call_id_stack"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(stack.len(), 3, "{stack:?}");
    assert!(
        stack[0].starts_with("standalone_rpc_proxy.call."),
        "{stack:?}"
    );
    assert!(stack[1].starts_with("rustecho.relay."), "{stack:?}");
    assert!(stack[2].starts_with("pyecho.whoami."), "{stack:?}");
    assert_eq!(seen["user_id"], "u-42");
    assert_eq!(seen["language"], "fr");

    // And Python → Rust, seen from Rust.
    let (code, seen) = py_client(
        &python,
        &uri,
        &["call", "pyrelay", "relay_to_rust", "[]", "{}"],
    );
    assert_eq!(code, 0, "{seen}");
    let rust_stack = seen["rust"]["call_id_stack"].as_array().unwrap();
    assert_eq!(rust_stack.len(), 3, "{seen}");
    assert!(rust_stack[1]
        .as_str()
        .unwrap()
        .starts_with("pyrelay.relay_to_rust."));
    assert!(rust_stack[2]
        .as_str()
        .unwrap()
        .starts_with("rustecho.whoami."));

    // One trace across Rust → Python → Rust.
    let seen = client
        .call("rustecho", "trace_through_python", json!({}))
        .await
        .unwrap();
    let trace_id = seen["trace_id"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32, "{seen}");
    assert_eq!(seen["via"]["rust"]["trace_id"], trace_id, "{seen}");
    assert_eq!(
        seen["via"]["rust"]["parent_span_id"], seen["span_id"],
        "the Python hop passes the caller's span on: {seen}"
    );

    running.stop().await;
}
