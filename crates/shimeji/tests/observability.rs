//! Observability: trace context across hops, request ids at the HTTP edge,
//! the Prometheus endpoint, health and readiness.

mod support;

use serde_json::{json, Value};
use shimeji::context;
use shimeji::http::Json;
use shimeji::prelude::*;
use std::time::Duration;

/// What the running worker knows about its place in the request.
fn seen() -> Value {
    let c = context::current().expect("inside a worker");
    json!({
        "trace_id": c.trace_id(),
        "span_id": c.span_id(),
        "parent_span_id": c.parent_span_id(),
        "stack": c.call_id_stack(),
    })
}

#[derive(Default, Dependencies)]
struct Front {
    back: BackClient,
}

#[service(name = "obs_front")]
impl Front {
    #[rpc]
    async fn start(&self) -> Result<Value, CallError> {
        Ok(json!({"front": seen(), "back": self.back.hop().await?}))
    }

    #[http(GET, "/chain")]
    async fn chain(&self) -> Result<Json<Value>, CallError> {
        Ok(Json(
            json!({"front": seen(), "back": self.back.hop().await?}),
        ))
    }
}

#[derive(Default, Dependencies)]
struct Back {
    tail: TailClient,
}

#[service(name = "obs_back")]
impl Back {
    #[rpc]
    async fn hop(&self) -> Result<Value, CallError> {
        Ok(json!({"me": seen(), "tail": self.tail.end().await?}))
    }
}

#[derive(Default, Dependencies)]
struct Tail;

#[service(name = "obs_tail")]
impl Tail {
    #[rpc]
    async fn end(&self) -> Value {
        seen()
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

fn check_chain(result: &Value) {
    let trace = str_at(result, "/front/trace_id");
    assert_eq!(trace.len(), 32);
    assert_eq!(str_at(result, "/back/me/trace_id"), trace, "{result}");
    assert_eq!(str_at(result, "/back/tail/trace_id"), trace, "{result}");
    assert_eq!(
        str_at(result, "/back/me/parent_span_id"),
        str_at(result, "/front/span_id"),
        "B's parent is A: {result}"
    );
    assert_eq!(
        str_at(result, "/back/tail/parent_span_id"),
        str_at(result, "/back/me/span_id"),
        "C's parent is B: {result}"
    );
    let spans = [
        str_at(result, "/front/span_id"),
        str_at(result, "/back/me/span_id"),
        str_at(result, "/back/tail/span_id"),
    ];
    assert!(spans[0] != spans[1] && spans[1] != spans[2] && spans[0] != spans[2]);
}

#[tokio::test]
async fn a_chain_of_three_services_shares_one_trace() {
    let running = ServiceRunner::new()
        .service(Front::default())
        .service(Back::default())
        .service(Tail)
        .start()
        .await
        .unwrap();
    let front: FrontClient = running.client();
    let result = front.start().await.unwrap();
    check_chain(&result);
    assert_eq!(
        result["front"]["parent_span_id"],
        Value::Null,
        "A starts the trace"
    );
    // A second request is a second trace.
    let again = front.start().await.unwrap();
    assert_ne!(again["front"]["trace_id"], result["front"]["trace_id"]);
    running.stop().await;
}

fn web_config() -> Config {
    Config::new().set("WEB_SERVER_ADDRESS", "127.0.0.1:0")
}

#[tokio::test]
async fn the_http_edge_takes_or_makes_a_request_id_and_continues_a_trace() {
    let running = ServiceRunner::with_config(web_config())
        .service(Front::default())
        .service(Back::default())
        .service(Tail)
        .start()
        .await
        .unwrap();
    let url = format!("http://{}/chain", running.web_address().unwrap());
    let http = reqwest::Client::new();

    // The client's request id and trace context.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = http
        .get(&url)
        .header("x-request-id", "req-1")
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-1");
    let body: Value = response.json().await.unwrap();
    check_chain(&body);
    for stack in ["/front/stack/0", "/back/me/stack/0", "/back/tail/stack/0"] {
        assert_eq!(str_at(&body, stack), "req-1", "{body}");
    }
    assert_eq!(
        str_at(&body, "/front/trace_id"),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(str_at(&body, "/front/parent_span_id"), "00f067aa0ba902b7");

    // None given: one is made, returned, and is the root of the stack.
    let response = http.get(&url).send().await.unwrap();
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(made.len(), 32, "{made}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(str_at(&body, "/back/tail/stack/0"), made);
    assert_eq!(body["front"]["parent_span_id"], Value::Null);

    // Unusable ones are replaced, not trusted.
    let long = "x".repeat(200);
    for bad in ["has space", long.as_str()] {
        let response = http
            .get(&url)
            .header("x-request-id", bad)
            .header("traceparent", "garbage")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32);
    }
    running.stop().await;
}

#[derive(Debug, thiserror::Error, Exception)]
#[error("out of stock: {0}")]
struct OutOfStock(String);

#[derive(Default, Dependencies)]
struct Metered {
    events: EventDispatcher,
}

#[service(name = "obs_metered")]
impl Metered {
    #[rpc]
    async fn buy(&self, item: String) -> Result<String, OutOfStock> {
        if item == "unicorn" {
            return Err(OutOfStock(item));
        }
        self.events
            .dispatch("bought", json!({ "item": item }))
            .await
            .map_err(|e| OutOfStock(e.to_string()))?;
        Ok(item)
    }

    #[event_handler("obs_metered", "bought")]
    async fn on_bought(&self, _payload: Value) {}
}

#[derive(Default, Dependencies)]
struct Outer {
    inner: InnerClient,
}

#[service(name = "obs_outer")]
impl Outer {
    /// Calls `obs_inner.echo` (it answers at once) and `obs_inner.nap`
    /// (it waits): the first is served within the caller's poll, the
    /// second, and this run with it, finish later.
    #[rpc]
    async fn relay(&self, n: u64) -> Result<u64, CallError> {
        Ok(self.inner.echo(n).await? + self.inner.nap(n).await?)
    }
}

#[derive(Default, Dependencies)]
struct Inner;

#[service(name = "obs_inner")]
impl Inner {
    #[rpc]
    async fn echo(&self, n: u64) -> u64 {
        n
    }

    #[rpc]
    async fn nap(&self, n: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        n
    }
}

#[tokio::test]
async fn every_in_process_call_counts_once_on_each_side() {
    let running = metered()
        .service(Outer::default())
        .service(Inner)
        .start()
        .await
        .unwrap();
    let outer: OuterClient = running.client();
    let inner: InnerClient = running.client();
    for n in 0..5 {
        assert_eq!(outer.relay(n).await.unwrap(), 2 * n);
        assert_eq!(inner.echo(n).await.unwrap(), n);
    }
    for n in 0..2 {
        assert_eq!(inner.nap(n).await.unwrap(), n);
    }
    let text = shimeji::metrics::render();
    for (service, method, calls) in [
        ("obs_outer", "relay", 5.0),
        ("obs_inner", "echo", 10.0),
        ("obs_inner", "nap", 7.0),
    ] {
        let ep = format!(r#"service="{service}",entrypoint="{method}""#);
        let cl = format!(r#"service="{service}",method="{method}""#);
        for series in [
            format!(r#"shimeji_entrypoint_calls_total{{{ep},outcome="ok"}}"#),
            format!("shimeji_entrypoint_duration_seconds_count{{{ep}}}"),
            format!(r#"shimeji_client_calls_total{{{cl},outcome="ok"}}"#),
            format!("shimeji_client_call_duration_seconds_count{{{cl}}}"),
        ] {
            assert_eq!(sample(&text, &series), calls, "{series}");
        }
        // A call takes its caller at least as long as its run.
        let run = sample(
            &text,
            &format!("shimeji_entrypoint_duration_seconds_sum{{{ep}}}"),
        );
        let call = sample(
            &text,
            &format!("shimeji_client_call_duration_seconds_sum{{{cl}}}"),
        );
        assert!(
            run > 0.0 && call >= run,
            "{method}: run {run} s, call {call} s"
        );
    }
    running.stop().await;
}

/// A runner with metrics on, served on a free port.
fn metered() -> ServiceRunner {
    ServiceRunner::with_config(Config::new().set("METRICS_ADDRESS", "127.0.0.1:0"))
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A series' value in the scrape; fails the test when it is absent.
fn sample(text: &str, series: &str) -> f64 {
    support::sample(text, series).unwrap_or_else(|| panic!("no sample `{series}` in:\n{text}"))
}

/// `METRICS_ADDRESS` on a port another socket holds: a listen error naming
/// it, before any service starts.
#[tokio::test]
async fn a_taken_metrics_address_is_a_listen_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let config = Config::new().set("METRICS_ADDRESS", address.as_str());
    let started = ServiceRunner::with_config(config)
        .service(Metered::default())
        .start()
        .await;
    match started {
        Err(StartError::Listen {
            address: at,
            source,
        }) => {
            assert_eq!(at, address);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        Err(other) => panic!("not a listen error: {other:?}"),
        Ok(_) => panic!("started on a taken port"),
    }
}

#[tokio::test]
async fn metrics_are_scraped_from_metrics_address() {
    let config = Config::new()
        .set("METRICS_ADDRESS", "127.0.0.1:0")
        .set("max_workers", 7);
    let running = ServiceRunner::with_config(config)
        .service(Metered::default())
        .start()
        .await
        .unwrap();
    let base = format!("http://{}", running.metrics_address().unwrap());
    let client = running.dynamic_client();
    for _ in 0..3 {
        let handled = running.entrypoint_waiter("obs_metered", "on_bought");
        client
            .call("obs_metered", "buy", json!({"item": "apple"}))
            .await
            .unwrap();
        handled.wait(Duration::from_secs(5)).await.unwrap();
    }
    let err = client
        .call("obs_metered", "buy", json!({"item": "unicorn"}))
        .await
        .unwrap_err();
    assert_eq!(err.exc_type(), "OutOfStock");

    let (status, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let ep = r#"service="obs_metered",entrypoint="buy""#;
    assert_eq!(
        sample(
            &text,
            &format!(r#"shimeji_entrypoint_calls_total{{{ep},outcome="ok"}}"#)
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"shimeji_entrypoint_calls_total{{{ep},outcome="OutOfStock"}}"#)
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("shimeji_entrypoint_duration_seconds_count{{{ep}}}")
        ),
        4.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"shimeji_entrypoint_duration_seconds_bucket{{le="+Inf",{ep}}}"#)
        ),
        4.0
    );
    assert!(
        sample(
            &text,
            &format!("shimeji_entrypoint_duration_seconds_sum{{{ep}}}")
        ) > 0.0
    );
    assert_eq!(
        sample(&text, r#"shimeji_workers_max{service="obs_metered"}"#),
        7.0
    );
    assert_eq!(
        sample(&text, r#"shimeji_workers_busy{service="obs_metered"}"#),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            r#"shimeji_client_calls_total{service="obs_metered",method="buy",outcome="ok"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            r#"shimeji_client_calls_total{service="obs_metered",method="buy",outcome="OutOfStock"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"shimeji_client_call_duration_seconds_count{service="obs_metered",method="buy"}"#
        ),
        4.0
    );
    assert_eq!(
        sample(
            &text,
            r#"shimeji_events_dispatched_total{source="obs_metered",event_type="bought"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            r#"shimeji_events_handled_total{service="obs_metered",handler="on_bought",source="obs_metered",event_type="bought",outcome="ok"}"#
        ),
        3.0
    );
    assert!(
        text.contains("# TYPE shimeji_transport_reconnects counter"),
        "{text}"
    );
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );

    let (status, _) = get(&format!("{base}/nothing-here")).await;
    assert_eq!(status, 404);
    running.stop().await;
}

#[derive(Default, Dependencies)]
struct Slow;

#[service(name = "obs_slow")]
impl Slow {
    #[rpc]
    async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// `obs_slow`'s twin under a name of its own: tests run at once, and
/// metrics are kept per service name.
#[derive(Default, Dependencies)]
struct Sleepy;

#[service(name = "obs_sleepy")]
impl Sleepy {
    #[rpc]
    async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

#[tokio::test]
async fn runs_in_flight_are_gauged_and_abandoned_ones_counted_cancelled() {
    let running = metered().service(Sleepy).start().await.unwrap();
    let ep = r#"service="obs_sleepy",entrypoint="nap""#;
    let in_flight = format!("shimeji_entrypoint_in_flight{{{ep}}}");
    let cancelled = format!(r#"shimeji_entrypoint_calls_total{{{ep},outcome="Cancelled"}}"#);
    let client: SleepyClient = running.client();
    let naps: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.nap(400).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(sample(&shimeji::metrics::render(), &in_flight), 3.0);
    for nap in naps {
        assert_eq!(nap.await.unwrap().unwrap(), 400);
    }
    let text = shimeji::metrics::render();
    assert_eq!(sample(&text, &in_flight), 0.0);

    // An in-process caller that gives up drops the run it was running.
    let impatient = client.with_timeout(Duration::from_millis(50));
    let err = impatient.nap(2_000).await.unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
    let text = shimeji::metrics::render();
    assert_eq!(sample(&text, &in_flight), 0.0, "{text}");
    assert_eq!(sample(&text, &cancelled), 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("shimeji_entrypoint_duration_seconds_count{{{ep}}}")
        ),
        4.0
    );
    running.stop().await;
}

#[tokio::test]
async fn ready_while_serving_not_while_draining() {
    let running = metered().service(Slow).start().await.unwrap();
    let base = format!("http://{}", running.metrics_address().unwrap());
    let (status, body) = get(&format!("{base}/health/ready")).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["stage"], "serving");
    assert_eq!(body["transport"], "memory");
    let (status, _) = get(&format!("{base}/health/live")).await;
    assert_eq!(status, 200);

    // A call in flight keeps the services draining for a while.
    let client: SlowClient = running.client();
    let call = tokio::spawn(async move { client.nap(1500).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = running.health();
    let stopping = tokio::spawn(running.stop());
    let mut saw_draining = false;
    for _ in 0..50 {
        let (status, body) = get(&format!("{base}/health/ready")).await;
        if status == 503 {
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["ready"], false);
            assert_eq!(body["stage"], "draining");
            let (live, _) = get(&format!("{base}/health/live")).await;
            assert_eq!(live, 200, "live while draining");
            saw_draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_draining, "readiness never turned 503 while draining");
    assert_eq!(
        call.await.unwrap().unwrap(),
        1500,
        "the call in flight finished"
    );
    stopping.await.unwrap();
    assert!(!health.readiness().ready);
    assert!(
        reqwest::get(format!("{base}/health/live")).await.is_err(),
        "the operations server stops with the services"
    );
}

/// What the pages service fails with.
#[derive(Debug, thiserror::Error, Exception)]
enum PageError {
    /// The caller asked for a page that is not there: its fault.
    #[error("no such page")]
    #[exception(status = 404)]
    Missing,
    /// The store behind is down: ours.
    #[error("the store is down")]
    #[exception(status = 503)]
    StoreDown,
}

#[derive(Default, Dependencies)]
struct Pages;

#[service(name = "obs_pages")]
impl Pages {
    #[http(GET, "/pages/{name}")]
    async fn page(
        &self,
        shimeji::http::Path(name): shimeji::http::Path<String>,
    ) -> Result<Json<Value>, PageError> {
        match name.as_str() {
            "missing" => Err(PageError::Missing),
            "down" => Err(PageError::StoreDown),
            _ => Ok(Json(json!({ "name": name }))),
        }
    }

    /// A 5xx the entrypoint makes itself, with no error type.
    #[http(GET, "/overloaded")]
    async fn overloaded(&self) -> (shimeji::http::Status, Json<Value>) {
        (
            shimeji::http::Status::BAD_GATEWAY,
            Json(json!({ "busy": true })),
        )
    }
}

#[tokio::test]
async fn an_http_entrypoint_that_answers_a_5xx_counts_as_failed() {
    let config = Config::new()
        .set("WEB_SERVER_ADDRESS", "127.0.0.1:0")
        .set("METRICS_ADDRESS", "127.0.0.1:0");
    let running = ServiceRunner::with_config(config)
        .service(Pages)
        .start()
        .await
        .unwrap();
    let web = format!("http://{}", running.web_address().unwrap());
    for (path, status) in [
        ("/pages/home", 200),
        ("/pages/about", 200),
        ("/pages/missing", 404),
        ("/pages/down", 503),
        ("/overloaded", 502),
    ] {
        assert_eq!(get(&format!("{web}{path}")).await.0, status, "{path}");
    }
    let (_, body) = get(&format!("{web}/pages/down")).await;
    assert!(
        !body.contains("store is down"),
        "no details of a 5xx: {body}"
    );

    let (_, text) = get(&format!(
        "http://{}/metrics",
        running.metrics_address().unwrap()
    ))
    .await;
    let series = |entrypoint: &str, outcome: &str| {
        sample(
            &text,
            &format!(
                r#"shimeji_entrypoint_calls_total{{service="obs_pages",entrypoint="{entrypoint}",outcome="{outcome}"}}"#
            ),
        )
    };
    // A 4xx is the caller's error: the run did its job.
    assert_eq!(series("page", "ok"), 3.0);
    assert_eq!(series("page", "StoreDown"), 2.0);
    assert_eq!(series("overloaded", "HttpServerError"), 1.0);
    running.stop().await;
}
