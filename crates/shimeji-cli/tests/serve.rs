//! `shimeji::cli::serve`, the command line of service binaries: it serves
//! over RabbitMQ until SIGTERM and then stops gracefully; bad configuration
//! and an unreachable broker come back as errors with their exit status.
//!
//! The SIGTERM test signals this whole test process, so it lives in a test
//! binary of its own.

mod support;

use clap::Parser;
use shimeji::cli::{serve, ServiceArgs, EXIT_CONNECT, EXIT_USAGE};
use shimeji::prelude::*;
use std::time::{Duration, Instant};

#[derive(Default, Dependencies)]
struct Served;

#[shimeji::service(name = "cli_served")]
impl Served {
    /// Answers.
    #[rpc]
    async fn ping(&self) -> String {
        "pong".into()
    }
}

/// Parses a service binary's arguments; logs at `warn` unless they say otherwise.
fn args(args: &[&str]) -> ServiceArgs {
    let mut all = vec!["served"];
    if !args.contains(&"--log-level") {
        all.extend(["--log-level", "warn"]);
    }
    all.extend_from_slice(args);
    ServiceArgs::try_parse_from(all).expect("arguments parse")
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_until_sigterm() {
    let uri = support::fresh_vhost("shimeji-test-cli-serve");
    // Listening for SIGTERM here first means the signal can never take the
    // default action (ending this process), whenever `serve` starts listening.
    let _sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();

    // Waits for the service to answer, then sends SIGTERM to this process.
    // (`serve` itself runs on this task: its future is not `Send`, see below.)
    let caller = ServiceRunner::with_config(Config::new().set("AMQP_URI", uri.clone()))
        .start()
        .await
        .expect("client connects");
    let client = caller.dynamic_client();
    let driver = tokio::spawn({
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match client
                    .call("cli_served", "ping", serde_json::json!([]))
                    .await
                {
                    Ok(reply) => {
                        assert_eq!(reply, "pong");
                        break;
                    }
                    Err(e) if e.is("UnknownService") && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("cli_served never answered: {e}"),
                }
            }
            let killed = std::process::Command::new("kill")
                .args(["-TERM", &std::process::id().to_string()])
                .status()
                .expect("run kill");
            assert!(killed.success());
        }
    });

    let served = tokio::time::timeout(
        Duration::from_secs(60),
        serve(args(&["--broker", &uri]), |runner| runner.service(Served)),
    )
    .await
    .expect("serve stops after SIGTERM");
    driver
        .await
        .expect("the service answered, then SIGTERM was sent");
    served.expect("serve returns Ok");

    // Stopped: nobody consumes its queue any more. (The durable queue stays,
    // as Nameko's does, so a call now waits for its timeout rather than
    // failing with UnknownService.)
    let queues = support::ctl(&[
        "list_queues",
        "-q",
        "-p",
        uri.rsplit('/').next().unwrap_or("/"),
        "name",
        "consumers",
    ]);
    let consumers = queues
        .lines()
        .find_map(|line| line.strip_prefix("rpc-cli_served\t"))
        .unwrap_or_else(|| panic!("no rpc-cli_served queue: {queues}"));
    assert_eq!(consumers.trim(), "0", "{queues}");
    caller.stop().await;
}

#[tokio::test]
async fn unreachable_broker_is_exit_3() {
    let err = serve(
        args(&["--broker", "amqp://guest:s3cret@127.0.0.1:1/"]),
        |runner| runner.service(Served),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), EXIT_CONNECT, "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with("cannot connect to amqp://guest:***@127.0.0.1:1/"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn bad_configuration_is_exit_2() {
    let dir = std::env::temp_dir().join(format!("shimeji-cli-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yaml");
    std::fs::write(&file, "max_workers: 0\n").unwrap();
    let err = serve(args(&["--config", file.to_str().unwrap()]), |runner| {
        runner.service(Served)
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), EXIT_USAGE, "{err}");
    assert!(err.to_string().contains("max_workers"), "{err}");

    let err = serve(args(&["--broker", "localhost:5672"]), |runner| {
        runner.service(Served)
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), EXIT_USAGE, "{err}");
    assert!(err.to_string().contains("amqp://"), "{err}");

    let err = serve(args(&["--log-level", "info,=[bad"]), |runner| runner)
        .await
        .unwrap_err();
    assert_eq!(err.code(), EXIT_USAGE, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn show_config_returns_without_serving() {
    serve(
        args(&[
            "--broker",
            "amqp://guest:guest@127.0.0.1:1/",
            "--show-config",
        ]),
        |runner| runner.service(Served),
    )
    .await
    .expect("--show-config needs no broker");
}
