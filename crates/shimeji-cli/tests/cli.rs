//! The `shimeji` binary against RabbitMQ: a `cli_greeter` service runs in
//! this test process; each test runs the binary and checks what it prints
//! and how it exits.

mod support;

use serde_json::Value;
use shimeji::prelude::*;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::{fresh_vhost, shimeji, Run};

const VHOST: &str = "shimeji-test-cli";

/// The service the binary calls.
#[derive(Default, Dependencies)]
struct CliGreeter {
    pings: Mutex<Vec<Value>>,
}

#[shimeji::service(name = "cli_greeter")]
impl CliGreeter {
    /// Greets.
    #[rpc]
    async fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }

    /// The `user_id` of the caller's context data.
    #[rpc]
    async fn whoami(&self) -> Option<String> {
        shimeji::context::current().and_then(|c| c.user_id().map(String::from))
    }

    /// Answers late.
    #[rpc]
    async fn slow(&self) -> bool {
        tokio::time::sleep(Duration::from_secs(3)).await;
        true
    }

    /// Keeps `cli_test.ping` events.
    #[event_handler("cli_test", "ping")]
    async fn ping(&self, payload: Value) {
        self.pings.lock().unwrap().push(payload);
    }

    /// The `ping` payloads received so far.
    #[rpc]
    async fn pings(&self) -> Vec<Value> {
        self.pings.lock().unwrap().clone()
    }
}

/// The broker URI on this binary's virtual host, with `cli_greeter` served
/// there by a runtime of its own for the whole test run.
fn broker() -> &'static str {
    static BROKER: OnceLock<Result<String, String>> = OnceLock::new();
    let started = BROKER.get_or_init(|| {
        let uri = fresh_vhost(VHOST);
        let (tx, rx) = std::sync::mpsc::channel();
        let service_uri = uri.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let config = Config::new().set("AMQP_URI", service_uri);
                match ServiceRunner::with_config(config)
                    .service(CliGreeter::default())
                    .start()
                    .await
                {
                    Ok(_running) => {
                        let _ = tx.send(Ok(()));
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => Ok(uri),
            Ok(Err(e)) => Err(format!("cli_greeter did not start: {e}")),
            Err(_) => Err("cli_greeter did not start within 30 s".into()),
        }
    });
    match started {
        Ok(uri) => uri,
        Err(e) => panic!("{e}"),
    }
}

/// Runs `shimeji --broker <this binary's vhost> <args…>`.
fn run(args: &[&str]) -> Run {
    let mut all = vec!["--broker", broker()];
    all.extend_from_slice(args);
    shimeji(&all)
}

#[test]
fn call_with_keyword_arguments() {
    let out = run(&["call", "cli_greeter.hello", r#"{"name":"Ada"}"#]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), r#""Hello, Ada!""#, "{out:?}");
}

#[test]
fn call_with_positional_arguments() {
    let out = run(&["call", "cli_greeter.hello", r#"["Grace"]"#]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), r#""Hello, Grace!""#, "{out:?}");
}

#[test]
fn call_sends_context_data() {
    let out = run(&[
        "call",
        "cli_greeter.whoami",
        "--context",
        r#"{"user_id":"u1"}"#,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), r#""u1""#, "{out:?}");
    let out = run(&["call", "cli_greeter.whoami"]);
    assert_eq!(out.stdout.trim(), "null", "{out:?}");
}

#[test]
fn unknown_method_exits_1() {
    let out = run(&["call", "cli_greeter.nope", "{}"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("MethodNotFound: "), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn wrong_arguments_exit_1() {
    let out = run(&["call", "cli_greeter.hello", "{}"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("IncorrectSignature: "), "{out:?}");
}

#[test]
fn unknown_service_exits_1() {
    let out = run(&["call", "cli_nobody.hello", "[]"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("UnknownService: "), "{out:?}");
    assert!(out.stderr.contains("cli_nobody"), "{out:?}");
}

#[test]
fn timeout_exits_1() {
    let started = Instant::now();
    let out = run(&["call", "--timeout", "0.5", "cli_greeter.slow"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("Timeout: "), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{out:?}");
}

#[test]
fn bad_json_exits_2() {
    let out = run(&["call", "cli_greeter.hello", "{name: Ada}"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("invalid JSON in the arguments"),
        "{out:?}"
    );
    let out = run(&["call", "cli_greeter.hello", r#""Ada""#]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(r#"write ["Ada"]"#), "{out:?}");
    let out = run(&["call", "cli_greeter", "[]"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("SERVICE.METHOD"), "{out:?}");
    let out = run(&["call", "cli_greeter.whoami", "--context", "[1]"]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn dispatch_reaches_the_handler() {
    let out = run(&["dispatch", "cli_test", "ping", r#"{"n": 1}"#]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "dispatched cli_test.ping", "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = run(&["call", "cli_greeter.pings"]);
        assert_eq!(out.code, 0, "{out:?}");
        let pings: Value = serde_json::from_str(&out.stdout).expect("JSON");
        if pings
            .as_array()
            .is_some_and(|p| p.contains(&serde_json::json!({"n": 1})))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the event never arrived: {pings}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn services_lists_cli_greeter() {
    let out = run(&["services"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["cli_greeter"],
        "{out:?}"
    );
    let out = run(&["services", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let listed: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        listed,
        serde_json::json!([{"service": "cli_greeter", "consumers": 1}])
    );
}

#[test]
fn cannot_connect_exits_3_without_the_password() {
    let out = shimeji(&[
        "--broker",
        "amqp://guest:s3cret@127.0.0.1:1/",
        "call",
        "cli_greeter.hello",
        "[]",
    ]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("cannot connect to amqp://guest:***@127.0.0.1:1/"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("s3cret"), "{out:?}");
}

/// With neither `--broker` nor `AMQP_URI`, the command talks to
/// `amqp://guest:guest@localhost` (vhost `/`): the broker answers that the
/// service does not exist.
#[test]
fn the_default_broker_is_guest_at_localhost() {
    support::require_broker();
    let out = shimeji(&["call", "cli_no_such_service.hello", "[]", "--timeout", "5"]);
    assert_eq!(out.code, 1, "the broker was reached and answered: {out:?}");
    assert!(out.stderr.contains("UnknownService"), "{out:?}");
}

#[test]
fn help_works() {
    let out = shimeji(&["--help"]);
    assert_eq!(out.code, 0, "{out:?}");
    for word in [
        "call",
        "dispatch",
        "show-config",
        "services",
        "--broker",
        "Exit status",
    ] {
        assert!(out.stdout.contains(word), "{word} missing: {out:?}");
    }
    let out = shimeji(&["call", "--help"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("--timeout") && out.stdout.contains("--context"),
        "{out:?}"
    );
    let out = shimeji(&["services", "--help"]);
    assert!(
        out.stdout.contains("rabbitmqctl") && out.stdout.contains("15672"),
        "{out:?}"
    );
    let out = shimeji(&["frobnicate"]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn show_config_redacts_secrets() {
    let dir = std::env::temp_dir().join(format!("shimeji-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yaml");
    std::fs::write(
        &file,
        "AMQP_URI: amqp://app:hunter2@rabbit:5672/shop\nmax_workers: 4\n\
         database:\n  host: db\n  password: swordfish\napi_token: t0k3n\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let out = shimeji(&["show-config", "--config", file]);
    assert_eq!(out.code, 0, "{out:?}");
    for secret in ["hunter2", "swordfish", "t0k3n"] {
        assert!(!out.stdout.contains(secret), "{secret} shown: {out:?}");
    }
    assert!(
        out.stdout.contains("amqp://app:***@rabbit:5672/shop"),
        "{out:?}"
    );
    assert!(out.stdout.contains("max_workers: 4"), "{out:?}");

    let out = shimeji(&["show-config", "--config", file, "--format", "json"]);
    let shown: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(shown["database"]["password"], "***", "{out:?}");
    assert_eq!(shown["database"]["host"], "db", "{out:?}");

    let out = shimeji(&[
        "show-config",
        "--config",
        file,
        "--broker",
        "amqp://u:pw2@other/",
    ]);
    assert!(
        out.stdout.contains("amqp://u:***@other/") && !out.stdout.contains("pw2"),
        "{out:?}"
    );

    std::fs::write(
        dir.join("bad.yaml"),
        "max_workers: ${SHIMEJI_CLI_TEST_UNSET}\n",
    )
    .unwrap();
    let out = shimeji(&[
        "show-config",
        "--config",
        dir.join("bad.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("SHIMEJI_CLI_TEST_UNSET"), "{out:?}");
    let out = shimeji(&[
        "show-config",
        "--config",
        dir.join("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("cannot read config file"), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
