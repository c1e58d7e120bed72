#![cfg(feature = "otlp")]
#![cfg(feature = "http")]
//! The OTLP exporter: a chain A → B → C reaches a collector as one trace,
//! with the ids the workers saw and the right parent links.
//!
//! The span sink is process-wide and set once, so everything is one test.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use shimeji::context::{self, WorkerContext};
use shimeji::otlp::OtlpError;
use shimeji::prelude::*;
use shimeji::trace::TraceParent;
use std::sync::{Arc, Mutex};

/// One worker's trace context, as it saw it.
#[derive(Debug, Clone)]
struct Seen {
    service: &'static str,
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn record(log: &Log) {
    let ctx = context::current().expect("an entrypoint runs in a worker context");
    log.lock().unwrap().push(Seen {
        service: ctx.service().unwrap(),
        trace_id: ctx.trace_id().unwrap(),
        span_id: ctx.span_id().unwrap(),
        parent_span_id: ctx.parent_span_id(),
    });
}

#[derive(Debug, thiserror::Error, Exception)]
#[error("refused")]
struct Refused;

#[derive(Dependencies)]
struct A {
    b: BClient,
    log: Log,
}

#[service(name = "otlp_a")]
impl A {
    #[rpc]
    async fn go(&self) -> Result<String, CallError> {
        record(&self.log);
        self.b.go().await
    }
}

#[derive(Dependencies)]
struct B {
    c: CClient,
    log: Log,
}

#[service(name = "otlp_b")]
impl B {
    #[rpc]
    async fn go(&self) -> Result<String, CallError> {
        record(&self.log);
        self.c.go().await
    }
}

#[derive(Dependencies)]
struct C {
    log: Log,
}

#[service(name = "otlp_c")]
impl C {
    #[rpc]
    async fn go(&self) -> String {
        record(&self.log);
        "done".into()
    }

    #[rpc]
    async fn fail(&self) -> Result<(), Refused> {
        record(&self.log);
        Err(Refused)
    }
}

/// A fake OTLP/HTTP collector: keeps the content type and body of every
/// POST to `/v1/traces`.
type Posts = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn collect(
    State(posts): State<Posts>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ([(header::HeaderName, &'static str); 1], &'static str) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    posts.lock().unwrap().push((content_type, body.to_vec()));
    ([(header::CONTENT_TYPE, "application/json")], "{}")
}

/// A string attribute of an OTLP JSON object (span or resource).
fn attr<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

/// An OTLP JSON integer: a number, or (64-bit ones) a string.
fn int(value: &Value) -> u64 {
    match value {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        Value::Null => 0,
        other => panic!("not an integer: {other}"),
    }
}

/// The parent span id of an OTLP JSON span; `None` when it has none.
fn parent(span: &Value) -> Option<&str> {
    span["parentSpanId"].as_str().filter(|p| !p.is_empty())
}

const SPAN_KIND_SERVER: u64 = 2;
const STATUS_CODE_ERROR: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_reaches_the_collector_as_one_trace_with_the_workers_ids() {
    let posts = Posts::default();
    let app = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(posts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    for bad in ["https://127.0.0.1:4318", "127.0.0.1:4318", "http://", ""] {
        assert!(
            matches!(
                shimeji::otlp::install(bad, "otlp-test"),
                Err(OtlpError::Endpoint { .. })
            ),
            "{bad}"
        );
    }
    let otlp = shimeji::otlp::install(&format!("http://{addr}/"), "otlp-test").unwrap();
    assert!(matches!(
        shimeji::otlp::install(&format!("http://{addr}"), "otlp-test"),
        Err(OtlpError::AlreadyInstalled)
    ));

    let log = Log::default();
    let running = ServiceRunner::with_config(Config::new())
        .service(A {
            b: BClient::default(),
            log: log.clone(),
        })
        .service(B {
            c: CClient::default(),
            log: log.clone(),
        })
        .service(C { log: log.clone() })
        .start()
        .await
        .unwrap();

    // The chain, from no caller: A starts a new trace.
    let a: AClient = running.client();
    assert_eq!(a.go().await.unwrap(), "done");

    // A failing run, called from a remote caller's trace.
    let c: CClient = running.client();
    let caller =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let refused = context::scope(WorkerContext::root().with_trace_parent(caller), c.fail())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("Refused"), "{refused}");

    // A run whose caller's trace is not sampled: not exported.
    let unsampled =
        TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").unwrap();
    context::scope(WorkerContext::root().with_trace_parent(unsampled), c.go())
        .await
        .unwrap();

    running.stop().await;
    // Shutting down blocks until the collector (served by this runtime)
    // has answered: off the runtime's threads.
    tokio::task::spawn_blocking(move || otlp.shutdown())
        .await
        .unwrap()
        .unwrap();
    server.abort();

    // What the workers saw: A, B, C of the chain, then the two runs of C.
    let seen = log.lock().unwrap().clone();
    let services: Vec<_> = seen.iter().map(|s| s.service).collect();
    assert_eq!(
        services,
        ["otlp_a", "otlp_b", "otlp_c", "otlp_c", "otlp_c"],
        "{seen:?}"
    );
    let (seen_a, seen_b, seen_c, seen_fail) = (&seen[0], &seen[1], &seen[2], &seen[3]);
    assert_eq!(seen_a.parent_span_id, None);
    assert_eq!(seen_b.parent_span_id.as_ref(), Some(&seen_a.span_id));
    assert_eq!(seen_c.parent_span_id.as_ref(), Some(&seen_b.span_id));
    assert_eq!(seen_fail.trace_id, caller.trace_id_hex());
    assert_eq!(seen_fail.parent_span_id, Some(caller.span_id_hex()));

    // What the collector got.
    let posts = posts.lock().unwrap().clone();
    assert!(!posts.is_empty(), "nothing was posted to /v1/traces");
    let mut spans = Vec::new();
    for (content_type, body) in &posts {
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let request: Value = serde_json::from_slice(body).unwrap();
        for resource_spans in request["resourceSpans"].as_array().unwrap() {
            assert_eq!(
                attr(&resource_spans["resource"], "service.name"),
                Some("otlp-test"),
                "{resource_spans}"
            );
            for scope_spans in resource_spans["scopeSpans"].as_array().unwrap() {
                assert_eq!(scope_spans["scope"]["name"], "shimeji");
                spans.extend(scope_spans["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    assert_eq!(spans.len(), 4, "{spans:#?}");
    assert!(
        spans
            .iter()
            .all(|s| s["traceId"] != unsampled.trace_id_hex()),
        "an unsampled run was exported"
    );
    let span_of = |seen: &Seen| {
        let found: Vec<&Value> = spans
            .iter()
            .filter(|s| s["spanId"] == seen.span_id.as_str())
            .collect();
        assert_eq!(found.len(), 1, "span {} in {spans:#?}", seen.span_id);
        found[0]
    };
    let (a, b, c, fail) = (
        span_of(seen_a),
        span_of(seen_b),
        span_of(seen_c),
        span_of(seen_fail),
    );

    // One trace, the workers' own ids, the right parent links.
    for (span, seen) in [(a, seen_a), (b, seen_b), (c, seen_c), (fail, seen_fail)] {
        assert_eq!(span["traceId"], seen.trace_id.as_str(), "{span}");
        assert_eq!(parent(span), seen.parent_span_id.as_deref(), "{span}");
    }
    assert_eq!(a["traceId"], b["traceId"]);
    assert_eq!(b["traceId"], c["traceId"]);
    assert_eq!(parent(a), None, "{a}");
    assert_eq!(parent(b), a["spanId"].as_str());
    assert_eq!(parent(c), b["spanId"].as_str());
    assert_eq!(fail["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(parent(fail), Some("00f067aa0ba902b7"));

    // Names, kind, attributes, times.
    for (span, service, entrypoint) in [
        (a, "otlp_a", "go"),
        (b, "otlp_b", "go"),
        (c, "otlp_c", "go"),
        (fail, "otlp_c", "fail"),
    ] {
        assert_eq!(span["name"], format!("{service}.{entrypoint}"));
        assert_eq!(int(&span["kind"]), SPAN_KIND_SERVER, "{span}");
        assert_eq!(attr(span, "shimeji.service"), Some(service));
        assert_eq!(attr(span, "shimeji.entrypoint"), Some(entrypoint));
        let call_id = attr(span, "shimeji.call_id").unwrap_or_default();
        assert!(
            call_id.starts_with(&format!("{service}.{entrypoint}.")),
            "{call_id}"
        );
        let (start, end) = (
            int(&span["startTimeUnixNano"]),
            int(&span["endTimeUnixNano"]),
        );
        assert!(start > 0 && start <= end, "{span}");
    }
    let times = |s: &Value| (int(&s["startTimeUnixNano"]), int(&s["endTimeUnixNano"]));
    let ((a_start, a_end), (b_start, b_end), (c_start, c_end)) = (times(a), times(b), times(c));
    assert!(a_start <= b_start && b_start <= c_start);
    assert!(c_end <= b_end && b_end <= a_end);

    // Status: unset on success, ERROR with the message and type on failure.
    for span in [a, b, c] {
        assert_ne!(int(&span["status"]["code"]), STATUS_CODE_ERROR, "{span}");
        assert_eq!(attr(span, "exception.type"), None);
    }
    assert_eq!(int(&fail["status"]["code"]), STATUS_CODE_ERROR, "{fail}");
    assert_eq!(fail["status"]["message"], "refused");
    assert_eq!(attr(fail, "exception.type"), Some("Refused"));
}
