//! Observing services with no code of their own: JSON logs that carry the
//! call id and request id, Prometheus metrics, trace context, health checks.
//!
//! ```text
//! cargo run --example observability            # one request, its log lines, a scrape; then stops
//! cargo run --example observability -- --serve # keeps serving:
//! curl -i -X POST localhost:8000/orders -H 'x-request-id: req-7' \
//!      -H 'content-type: application/json' -d '{"item": "tea", "quantity": 2}'
//! curl localhost:9102/metrics
//! curl localhost:9102/health/ready
//! ```
//!
//! `orders` takes an order over HTTP and reserves it with `inventory` over
//! RPC. Every log line either service writes while handling the request has
//! the same `request_id` (the `X-Request-Id` the client sent, or one made up)
//! and the same `trace_id`. `METRICS_ADDRESS` turns metrics on and serves
//! them with the health checks; `WEB_SERVER_ADDRESS` is the HTTP port.

use serde::Deserialize;
use shimeji::http::{Json, Status};
use shimeji::logging::LogFormat;
use shimeji::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// Not enough of an item.
#[derive(Debug, thiserror::Error, Exception)]
#[exception(status = 409)]
#[error("only {left} {item} left")]
struct OutOfStock {
    item: String,
    left: u32,
}

/// Stock levels.
#[derive(Dependencies)]
struct Inventory {
    stock: Mutex<HashMap<String, u32>>,
}

impl Default for Inventory {
    fn default() -> Self {
        let stock = [("tea".to_string(), 10), ("cake".to_string(), 1)];
        Inventory {
            stock: Mutex::new(stock.into()),
        }
    }
}

#[service(name = "inventory")]
impl Inventory {
    /// Takes `quantity` of `item` off the shelf.
    #[rpc]
    async fn reserve(&self, item: String, quantity: u32) -> Result<u32, OutOfStock> {
        let mut stock = self.stock.lock().unwrap_or_else(|p| p.into_inner());
        let left = stock.get(&item).copied().unwrap_or(0);
        if left < quantity {
            tracing::warn!(%item, quantity, left, "not enough stock");
            return Err(OutOfStock { item, left });
        }
        stock.insert(item.clone(), left - quantity);
        tracing::info!(%item, quantity, left = left - quantity, "reserved");
        Ok(left - quantity)
    }
}

/// An order as clients send it.
#[derive(Deserialize)]
struct NewOrder {
    item: String,
    quantity: u32,
}

/// What can go wrong placing an order.
#[derive(Debug, thiserror::Error, Exception)]
enum OrderError {
    /// The inventory said no.
    #[error("{0}")]
    #[exception(status = 409)]
    Stock(String),
    /// The inventory could not be asked.
    #[error("inventory unavailable")]
    #[exception(status = 503)]
    Unavailable,
}

/// Takes orders over HTTP.
#[derive(Default, Dependencies)]
struct Orders {
    inventory: InventoryClient,
}

#[service(name = "orders")]
impl Orders {
    /// `POST /orders`: reserves the stock, answers 201.
    #[http(POST, "/orders")]
    async fn place(
        &self,
        Json(order): Json<NewOrder>,
    ) -> Result<(Status, Json<serde_json::Value>), OrderError> {
        tracing::info!(item = %order.item, quantity = order.quantity, "order received");
        let left = self
            .inventory
            .reserve(order.item.clone(), order.quantity)
            .await
            .map_err(|e| match e.remote() {
                Some(remote) if e.is("OutOfStock") => OrderError::Stock(remote.value.clone()),
                _ => OrderError::Unavailable,
            })?;
        tracing::info!(item = %order.item, "order placed");
        Ok((
            Status::CREATED,
            Json(serde_json::json!({"item": order.item, "left": left})),
        ))
    }
}

/// A bare HTTP/1.1 request on loopback, so the demo needs no HTTP client.
async fn http(address: std::net::SocketAddr, request: String) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve = std::env::args().any(|a| a == "--serve");
    shimeji::logging::init("info", LogFormat::Json)?;
    let config = Config::from_env();
    let config = if serve {
        config
    } else {
        // The demo listens on free ports, so it never clashes.
        config
            .set("WEB_SERVER_ADDRESS", "127.0.0.1:0")
            .set("METRICS_ADDRESS", "127.0.0.1:0")
    };
    let config = match config.metrics_address() {
        Some(_) => config,
        None => config.set("METRICS_ADDRESS", "127.0.0.1:9102"),
    };
    let running = ServiceRunner::with_config(config)
        .service(Inventory::default())
        .service(Orders::default())
        .start()
        .await?;
    let (Some(web), Some(ops)) = (running.web_address(), running.metrics_address()) else {
        return Err("the web and metrics servers should be listening".into());
    };
    if serve {
        tracing::info!(%web, metrics = %ops, "serving until Ctrl-C");
        running.run_until_signal().await;
        return Ok(());
    }

    // One order; its log lines go to stderr.
    let body = r#"{"item": "tea", "quantity": 2}"#;
    let response = http(
        web,
        format!(
            "POST /orders HTTP/1.1\r\nhost: demo\r\nx-request-id: req-7\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await?;
    println!(
        "POST /orders -> {}",
        response.lines().next().unwrap_or_default()
    );
    if let Some(id) = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-request-id"))
    {
        println!("  {id}");
    }

    // What Prometheus would scrape.
    let scrape = http(
        ops,
        "GET /metrics HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n".into(),
    )
    .await?;
    println!("\nGET /metrics (some lines):");
    for line in scrape.lines().filter(|l| {
        l.starts_with("shimeji_entrypoint_calls_total")
            || l.starts_with("shimeji_client_calls_total")
            || l.starts_with("shimeji_entrypoint_duration_seconds_count")
            || l.starts_with("shimeji_workers_max")
    }) {
        println!("  {line}");
    }
    let ready = http(
        ops,
        "GET /health/ready HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n".into(),
    )
    .await?;
    println!(
        "\nGET /health/ready -> {}",
        ready.lines().last().unwrap_or_default()
    );
    running.stop().await;
    Ok(())
}
