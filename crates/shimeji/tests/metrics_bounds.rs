//! Metric label values come only from what services declare: nothing a
//! peer sends (method names, error types, event types made at run time)
//! adds a series.

mod support;

use futures::SinkExt;
use serde_json::json;
use shimeji::prelude::*;
use support::{connect_ws, next_json};
use tokio_tungstenite::tungstenite::Message;

/// The tests here compare whole scrapes: one at a time.
static SCRAPES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Default, Dependencies)]
struct Desk;

#[service(name = "mb_desk", websocket)]
impl Desk {
    #[rpc]
    async fn ping(&self) -> String {
        "pong".into()
    }
}

#[derive(Debug, thiserror::Error, Exception)]
enum StockError {
    #[error("out of stock: {0}")]
    OutOfStock(String),
}

#[derive(Default, Dependencies)]
struct Store;

#[service(name = "mb_store")]
impl Store {
    /// Fails with a declared error type, or with any type the caller names.
    #[rpc]
    async fn take(&self, exc_type: Option<String>) -> Result<(), RemoteError> {
        match exc_type {
            None => Err(StockError::OutOfStock("tea".into()).to_remote()),
            Some(exc_type) => Err(RemoteError::new(exc_type, "remote.Made", "made up")),
        }
    }

    /// Declares its error type: its failures count by name.
    #[rpc]
    async fn reserve(&self) -> Result<(), StockError> {
        Err(StockError::OutOfStock("tea".into()))
    }
}

#[derive(Default, Dependencies)]
struct Shop {
    store: StoreClient,
    events: EventDispatcher,
}

#[service(name = "mb_shop", events = ["sold"])]
impl Shop {
    /// Passes the store's error on, whatever its type.
    #[rpc]
    async fn buy(&self, exc_type: String) -> Result<(), CallError> {
        self.store.take(Some(exc_type)).await
    }

    /// Dispatches an event whose type is made at run time.
    #[rpc]
    async fn announce(&self, event_type: String) -> bool {
        self.events.dispatch(event_type, json!({})).await.is_ok()
    }
}

fn metered() -> ServiceRunner {
    ServiceRunner::with_config(
        Config::new()
            .set("METRICS_ADDRESS", "127.0.0.1:0")
            .set("WEB_SERVER_ADDRESS", "127.0.0.1:0"),
    )
}

/// The scrape's series: every sample line without its value.
fn series(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        .collect()
}

/// The value of sample `series` (0 when absent).
/// A series' value in the scrape, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    support::sample(text, series).unwrap_or(0.0)
}

/// Asserts that each series grew by its count between two scrapes.
fn assert_grew(before: &str, after: &str, expected: &[(&str, f64)]) {
    for (series, n) in expected {
        assert_eq!(
            sample(after, series) - sample(before, series),
            *n,
            "{series} in:\n{after}"
        );
    }
}

/// Every `outcome` label value in the scrape.
fn outcomes(text: &str) -> std::collections::BTreeSet<String> {
    text.split("outcome=\"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(v, _)| v.to_string()))
        .collect()
}

#[tokio::test]
async fn unknown_methods_over_the_websocket_add_no_series() {
    let _one = SCRAPES.lock().await;
    let running = metered().service(Desk).start().await.unwrap();
    let url = format!("ws://{}/ws", running.web_address().unwrap());
    let mut ws = connect_ws(&url).await;
    let call = |method: String, id: usize| {
        Message::Text(
            json!({"method": method, "data": {}, "correlation_id": id})
                .to_string()
                .into(),
        )
    };
    // One known and one unknown method first: their series exist.
    ws.send(call("mb_desk.ping".into(), 0)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["data"], "pong");
    ws.send(call("mb_desk.nope".into(), 0)).await.unwrap();
    assert_eq!(
        next_json(&mut ws).await["error"]["exc_type"],
        "MethodNotFound"
    );
    let before = shimeji::metrics::render();

    const N: usize = 3000;
    for i in 1..=N {
        ws.feed(call(format!("mb_desk.unknown_{i}"), i))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    for _ in 1..=N {
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["error"]["exc_type"], "MethodNotFound", "{reply}");
    }
    let after = shimeji::metrics::render();
    assert_eq!(
        series(&before),
        series(&after),
        "3000 unknown methods changed the series"
    );
    // Only counters grew (a few digits).
    assert!(
        after.len() <= before.len() + 64,
        "scrape grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        after.contains(r#"shimeji_client_calls_total{service="mb_desk",method="other",outcome="MethodNotFound"} 3001"#),
        "the unknown calls count under `other`:\n{after}"
    );
    assert!(!after.contains("unknown_"), "{after}");
    running.stop().await;
}

#[tokio::test]
async fn remote_error_types_fold_into_other() {
    let _one = SCRAPES.lock().await;
    let running = metered()
        .service(Store)
        .service(Shop::default())
        .start()
        .await
        .unwrap();
    let shop: ShopClient = running.client();
    let store: StoreClient = running.client();
    // Warm up: every series these calls make exists before counting.
    shop.buy("Warmup".into()).await.unwrap_err();
    let err = store.reserve().await.unwrap_err();
    assert!(err.is("OutOfStock"), "{err}");
    let before = shimeji::metrics::render();

    for i in 0..50 {
        let err = shop.buy(format!("Made{i}")).await.unwrap_err();
        assert!(
            err.is(&format!("Made{i}")),
            "the caller still sees the type"
        );
    }
    let after = shimeji::metrics::render();
    assert_eq!(outcomes(&before), outcomes(&after), "{after}");
    assert_eq!(series(&before), series(&after));
    assert!(!after.contains("Made"), "{after}");
    assert_grew(
        &before,
        &after,
        &[
            (
                r#"shimeji_entrypoint_calls_total{service="mb_store",entrypoint="take",outcome="other"}"#,
                50.0,
            ),
            (
                r#"shimeji_client_calls_total{service="mb_store",method="take",outcome="other"}"#,
                50.0,
            ),
            (
                r#"shimeji_entrypoint_calls_total{service="mb_shop",entrypoint="buy",outcome="other"}"#,
                50.0,
            ),
        ],
    );
    // A declared error type keeps its name, on both sides.
    for line in [
        r#"shimeji_entrypoint_calls_total{service="mb_store",entrypoint="reserve",outcome="OutOfStock"}"#,
        r#"shimeji_client_calls_total{service="mb_store",method="reserve",outcome="OutOfStock"}"#,
    ] {
        assert!(sample(&after, line) >= 1.0, "no `{line}` in:\n{after}");
    }
    running.stop().await;
}

#[tokio::test]
async fn dynamic_calls_and_event_types_made_at_run_time_fold_into_other() {
    let _one = SCRAPES.lock().await;
    let running = metered()
        .service(Store)
        .service(Shop::default())
        .start()
        .await
        .unwrap();
    let client = running.dynamic_client();
    let shop: ShopClient = running.client();
    // Names made at run time: a running entrypoint keeps its name.
    let declared = client
        .call(String::from("mb_store"), String::from("reserve"), json!({}))
        .await
        .unwrap_err();
    assert!(declared.is("OutOfStock"));
    assert!(shop.announce("sold".into()).await.unwrap());
    // Warm up the folded series.
    client.call("mb_nowhere", "x", json!({})).await.unwrap_err();
    client.call("mb_store", "x", json!({})).await.unwrap_err();
    assert!(shop.announce("warmup".into()).await.unwrap());
    let before = shimeji::metrics::render();

    for i in 0..200 {
        let err = client
            .call(format!("mb_nowhere_{i}"), format!("m{i}"), json!({}))
            .await
            .unwrap_err();
        assert!(err.is("UnknownService"), "{err}");
        let err = client
            .call("mb_store", format!("m{i}"), json!({}))
            .await
            .unwrap_err();
        assert!(err.is("MethodNotFound"), "{err}");
        assert!(shop.announce(format!("made_{i}")).await.unwrap());
    }
    let after = shimeji::metrics::render();
    assert_eq!(series(&before), series(&after), "{after}");
    assert_grew(
        &before,
        &after,
        &[
            (
                r#"shimeji_client_calls_total{service="other",method="other",outcome="UnknownService"}"#,
                200.0,
            ),
            (
                r#"shimeji_client_calls_total{service="mb_store",method="other",outcome="MethodNotFound"}"#,
                200.0,
            ),
            (
                r#"shimeji_events_dispatched_total{source="mb_shop",event_type="other"}"#,
                200.0,
            ),
        ],
    );
    for line in [
        r#"shimeji_client_calls_total{service="mb_store",method="reserve",outcome="OutOfStock"}"#,
        r#"shimeji_events_dispatched_total{source="mb_shop",event_type="sold"}"#,
    ] {
        assert!(sample(&after, line) >= 1.0, "no `{line}` in:\n{after}");
    }
    assert!(
        !after.contains("made_") && !after.contains("mb_nowhere"),
        "{after}"
    );
    running.stop().await;
}
