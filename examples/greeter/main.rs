//! The greeter: one RPC entrypoint that answers and dispatches an event, and
//! a second service that handles the event.
//!
//! ```text
//! cargo run --example greeter
//! ```
//!
//! With no configuration it runs on the embedded transport: both services
//! start in this process, the demo calls `greeter.hello("Ada")` through the
//! typed client, waits for the `greeted` event to be handled, and stops.
//!
//! With `AMQP_URI` set it serves `greeter` over RabbitMQ until SIGTERM or
//! Ctrl-C, where Nameko services and clients can call it:
//!
//! ```text
//! AMQP_URI=amqp://guest:guest@127.0.0.1:5672 cargo run --release --example greeter
//! ```

use serde::Deserialize;
use shimeji::prelude::*;
use std::sync::Mutex;
use std::time::Duration;

/// The service: its name is its address.
#[derive(Default, Dependencies)]
struct Greeter {
    /// Dispatches events as `greeter`.
    events: EventDispatcher,
}

#[service(name = "greeter", events = ["greeted"])]
impl Greeter {
    /// Says hello, and tells whoever listens that it did.
    #[rpc]
    async fn hello(&self, name: String) -> Result<String, DispatchError> {
        self.events
            .dispatch("greeted", serde_json::json!({ "name": name }))
            .await?;
        Ok(format!("Hello, {name}!"))
    }
}

/// The `greeted` event's payload.
#[derive(Debug, Deserialize)]
struct Greeted {
    name: String,
}

/// Another service: keeps a list of everyone greeted.
#[derive(Default, Dependencies)]
struct Guestbook {
    names: Mutex<Vec<String>>,
}

#[service(name = "guestbook")]
impl Guestbook {
    /// Handles `greeted` events from `greeter`.
    #[event_handler("greeter", "greeted")]
    async fn sign(&self, event: Greeted) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.push(event.name);
        tracing::info!(guests = ?*names, "guestbook signed");
    }

    /// Everyone greeted so far.
    #[rpc]
    async fn guests(&self) -> Vec<String> {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let config = Config::from_env();
    if let Some(uri) = config.amqp_uri() {
        println!(
            "serving greeter over {} until SIGTERM or Ctrl-C",
            shimeji::config::redact_uri(&uri)
        );
        ServiceRunner::with_config(config)
            .service(Greeter::default())
            .run()
            .await?;
        println!("stopped");
        return Ok(());
    }

    let running = ServiceRunner::with_config(config)
        .service(Greeter::default())
        .service(Guestbook::default())
        .start()
        .await?;
    println!("services running on the embedded transport: greeter, guestbook");

    let signed = running.entrypoint_waiter("guestbook", "sign");
    let greeter: GreeterClient = running.client();
    let reply = greeter.hello("Ada".into()).await?;
    println!("greeter.hello(\"Ada\") -> {reply:?}");

    let finished = signed.wait(Duration::from_secs(5)).await?;
    println!(
        "event greeter.greeted handled by guestbook.sign (call id {})",
        finished.call_id
    );

    let guests = running.client::<GuestbookClient>().guests().await?;
    println!("guestbook.guests() -> {guests:?}");

    running.stop().await;
    println!("stopped");
    Ok(())
}
