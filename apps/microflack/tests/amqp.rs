//! MicroFlack over RabbitMQ with its services in separate runners (as in
//! separate processes): login through RPC to another runner, events to
//! every push-side instance, a revocation refused everywhere within a
//! second, and by an instance started afterwards. Works on a RabbitMQ
//! virtual host of its own, deleted at the end.

mod common;

use common::{eventually, App, Auth, Backend, Data};
use reqwest::{Method, StatusCode};
use std::process::Command;
use std::time::{Duration, Instant};

const BROKER: &str = "127.0.0.1:5672";

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A virtual host named as the framework's tests name theirs (so that a
/// later run deletes it if this one is killed), deleted when dropped.
struct Vhost(String);

impl Vhost {
    fn new() -> Vhost {
        assert!(
            std::net::TcpStream::connect_timeout(&BROKER.parse().unwrap(), Duration::from_secs(2)).is_ok(),
            "RabbitMQ is needed on {BROKER} (guest/guest): start it with `rabbitmq-server -detached` or `bash .ci/run`"
        );
        let name = format!(
            "shimeji-test-microflack_amqp-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        rabbitmqctl(&["add_vhost", &name]).expect("vhost added");
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"])
            .expect("permissions set");
        Vhost(name)
    }

    fn uri(&self) -> String {
        format!("amqp://guest:guest@{BROKER}/{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.0]);
    }
}

on_both!(services_in_separate_runners);

async fn services_in_separate_runners(backend: Backend) {
    let vhost = Vhost::new();
    let data = Data::new(backend);
    let config = data.config().set("AMQP_URI", vhost.uri());
    // tokens first: the others are ready once they loaded its revocations.
    let tokens = App::start_services(config.clone(), &["tokens", "ui"]).await;
    let users = App::start_services(config.clone(), &["users"]).await;
    let messages = App::start_services(config.clone(), &["messages"]).await;
    let push = App::start_services(config.clone(), &["push"]).await;

    // Login: tokens asks users over RabbitMQ.
    let id = users.register("susan", "dog").await;
    let token = tokens.login("susan", "dog").await;
    let (status, _, _) = tokens
        .call(
            Method::POST,
            "/api/tokens",
            Auth::Basic("susan", "cat"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Events reach the recorders of every runner (broadcast).
    let message = messages.post(&token, "hello *world*!").await;
    for app in [&users, &tokens, &messages, &push] {
        let seen = eventually(Duration::from_secs(5), || async {
            app.events_of("Message")
                .iter()
                .any(|e| e["model"]["id"] == message["id"])
                && app.events_of("User").iter().any(|e| e["model"]["id"] == id)
        })
        .await;
        assert!(seen, "every instance hears updated_model");
    }

    // A revocation: refused by users and messages within a second.
    let (status, _, _) = tokens
        .call(Method::DELETE, "/api/tokens", Auth::Bearer(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let revoked = Instant::now();
    let refused = eventually(Duration::from_secs(1), || async {
        users.get("/api/users", Auth::Bearer(&token)).await.0 == StatusCode::UNAUTHORIZED
            && messages.get("/api/messages", Auth::Bearer(&token)).await.0
                == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(
        refused,
        "refused everywhere within 1 s (took {:?})",
        revoked.elapsed()
    );

    // An instance started afterwards refuses it too.
    let late = App::start_services(config.clone(), &["messages"]).await;
    let refused = eventually(Duration::from_secs(3), || async {
        late.get("/api/messages", Auth::Bearer(&token)).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused, "a later instance loads the revocations");
    let fresh = tokens.login("susan", "dog").await;
    assert_eq!(
        late.get("/api/messages", Auth::Bearer(&fresh)).await.0,
        StatusCode::OK
    );

    for app in [late, push, messages, tokens, users] {
        app.stop().await;
    }
}
