//! RPC on the embedded transport: argument binding, results, errors, bad input.

use serde::{Deserialize, Serialize};
use serde_json::json;
use shimeji::payload::Payload;
use shimeji::prelude::*;
use shimeji::transport::Request;
use std::borrow::Cow;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Debug, thiserror::Error, Exception)]
#[exception(module = "geometry")]
enum GeometryError {
    #[error("no such shape: {0}")]
    NotFound(String),
    #[error("too far")]
    #[exception(name = "OutOfRange")]
    TooFar,
}

#[derive(Default, Dependencies)]
struct Geometry;

#[service(name = "geometry")]
impl Geometry {
    #[rpc]
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    #[rpc]
    async fn shift(&self, point: Point, dx: i32, dy: Option<i32>) -> Point {
        Point {
            x: point.x + dx,
            y: point.y + dy.unwrap_or(0),
        }
    }

    #[rpc]
    async fn find(&self, name: String) -> Result<Point, GeometryError> {
        match name.as_str() {
            "origin" => Ok(Point { x: 0, y: 0 }),
            "far" => Err(GeometryError::TooFar),
            _ => Err(GeometryError::NotFound(name)),
        }
    }

    #[rpc]
    async fn slow(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }

    #[rpc]
    async fn boom(&self) -> String {
        panic!("kaboom")
    }

    #[rpc]
    async fn nothing(&self) {}
}

async fn start() -> RunningServices {
    ServiceRunner::with_config(Config::new())
        .service(Geometry)
        .start()
        .await
        .expect("geometry starts")
}

#[tokio::test]
async fn typed_client_calls_and_gets_typed_results() {
    let running = start().await;
    let geo: GeometryClient = running.client();
    assert_eq!(geo.add(2, 3).await.unwrap(), 5);
    let p = geo.shift(Point { x: 1, y: 1 }, 2, None).await.unwrap();
    assert_eq!(p, Point { x: 3, y: 1 });
    assert_eq!(geo.nothing().await.unwrap(), ());
    running.stop().await;
}

/// The same service as another program (or an older version of it) may
/// declare it: `add` with narrower types and a reply read as JSON. Only
/// its client is used here.
#[allow(dead_code)]
mod declared_elsewhere {
    use shimeji::prelude::*;

    #[derive(Default, Dependencies)]
    pub struct Geometry;

    #[service(name = "geometry")]
    impl Geometry {
        #[rpc]
        pub async fn add(&self, a: i32, b: i32) -> serde_json::Value {
            serde_json::json!(a + b)
        }
    }
}

/// A typed client whose service serves in process hands its arguments
/// over in place when they are the service's own types, and sends them as
/// a payload when they are not: both get the service's answer.
#[tokio::test]
async fn a_client_of_another_declaration_is_served_through_json() {
    let running = start().await;
    let own: GeometryClient = running.client();
    let other: declared_elsewhere::GeometryClient = running.client();
    assert_eq!(own.add(40, 2).await.unwrap(), 42);
    assert_eq!(other.add(40, 2).await.unwrap(), json!(42));
    let err = own.find("far".into()).await.unwrap_err();
    assert!(err.is("OutOfRange"), "{err:?}");
    running.stop().await;
}

#[tokio::test]
async fn arguments_arrive_positionally_by_name_or_mixed() {
    let running = start().await;
    let client = running.dynamic_client();
    let by_position = client.call("geometry", "add", json!([2, 3])).await.unwrap();
    let by_name = client
        .call("geometry", "add", json!({"a": 2, "b": 3}))
        .await
        .unwrap();
    let mixed = client
        .call_with(
            "geometry",
            "add",
            vec![json!(2)],
            json!({"b": 3}).as_object().cloned().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        (by_position, by_name, mixed),
        (json!(5), json!(5), json!(5))
    );
    // An optional parameter may be left out.
    let p = client
        .call(
            "geometry",
            "shift",
            json!({"point": {"x": 0, "y": 0}, "dx": 1}),
        )
        .await
        .unwrap();
    assert_eq!(p, json!({"x": 1, "y": 0}));
    running.stop().await;
}

#[tokio::test]
async fn user_errors_cross_with_their_type() {
    let running = start().await;
    let geo: GeometryClient = running.client();
    let err = geo.find("square".into()).await.unwrap_err();
    assert!(err.is("NotFound"), "{err:?}");
    let CallError::Remote(remote) = &err else {
        panic!("expected a remote error, got {err:?}");
    };
    assert_eq!(remote.exc_type, "NotFound");
    assert_eq!(remote.exc_path, "geometry.NotFound");
    assert_eq!(remote.exc_args, vec![json!("no such shape: square")]);
    assert_eq!(remote.value, "no such shape: square");

    let err = geo.find("far".into()).await.unwrap_err();
    assert!(err.is("OutOfRange"), "{err:?}");

    // The dynamic client sees the same error.
    let err = running
        .dynamic_client()
        .call("geometry", "find", json!(["nowhere"]))
        .await
        .unwrap_err();
    assert_eq!(err.remote().unwrap().exc_path, "geometry.NotFound");
    running.stop().await;
}

#[tokio::test]
async fn built_in_errors() {
    let running = start().await;
    let client = running.dynamic_client();

    let err = client
        .call("geometry", "nope", json!([]))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::MethodNotFound(_)), "{err:?}");
    assert_eq!(err.remote().unwrap().value, "nope");
    assert_eq!(
        err.remote().unwrap().exc_path,
        "nameko.exceptions.MethodNotFound"
    );

    let err = client
        .call("geometry", "add", json!([1]))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::IncorrectSignature(_)), "{err:?}");
    assert_eq!(
        err.remote().unwrap().value,
        "add() missing 1 required positional argument: 'b'"
    );

    let err = client
        .call("geometry", "add", json!([1, 2, 3]))
        .await
        .unwrap_err();
    assert_eq!(
        err.remote().unwrap().value,
        "add() takes 2 positional arguments but 3 were given"
    );

    let err = client
        .call("geometry", "add", json!({"a": 1, "b": 2, "c": 3}))
        .await
        .unwrap_err();
    assert_eq!(
        err.remote().unwrap().value,
        "add() got an unexpected keyword argument 'c'"
    );

    let err = client
        .call("geometry", "add", json!([1, "two"]))
        .await
        .unwrap_err();
    assert!(err.is("IncorrectSignature"));
    assert!(err.remote().unwrap().value.contains("'b'"), "{err:?}");

    let err = client
        .call("nosuchsvc", "add", json!([]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::UnknownService(s) if s == "nosuchsvc"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "Unknown service `nosuchsvc`");
    running.stop().await;
}

#[tokio::test]
async fn timeouts_default_and_per_call() {
    let running = ServiceRunner::with_config(Config::new().set("rpc_timeout", 0.05))
        .service(Geometry)
        .start()
        .await
        .unwrap();
    let geo: GeometryClient = running.client();
    let err = geo.slow(1_000).await.unwrap_err();
    assert!(
        matches!(err, CallError::Timeout { timeout, .. } if timeout == Duration::from_millis(50)),
        "{err:?}"
    );
    // A per-call timeout overrides the default, both ways.
    assert_eq!(
        geo.with_timeout(Duration::from_secs(5))
            .slow(100)
            .await
            .unwrap(),
        100
    );
    let err = geo
        .with_timeout(Duration::from_millis(10))
        .slow(1_000)
        .await
        .unwrap_err();
    assert!(err.is("Timeout"));
    running.stop().await;
}

#[tokio::test]
async fn a_panicking_entrypoint_returns_an_error_and_the_service_keeps_serving() {
    let running = start().await;
    let geo: GeometryClient = running.client();
    for _ in 0..3 {
        let err = geo.boom().await.unwrap_err();
        assert!(err.is("WorkerPanic"), "{err:?}");
        assert_eq!(err.remote().unwrap().value, "kaboom");
    }
    assert_eq!(geo.add(1, 1).await.unwrap(), 2);
    running.stop().await;
}

async fn raw_call(running: &RunningServices, payload: Payload) -> CallError {
    running
        .transport()
        .call(Request {
            service: Cow::Borrowed("geometry"),
            method: Cow::Borrowed("add"),
            payload,
            context: None,
        })
        .await
        .expect_err("bad input must fail")
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_never_a_panic() {
    let running = start().await;
    // A body that is not an object.
    for body in [json!([1, 2]), json!("add"), json!(null), json!(42)] {
        let err = raw_call(&running, Payload::Json(body)).await;
        assert!(matches!(err, CallError::MalformedRequest(_)), "{err:?}");
    }
    // An object without args or kwargs, or with them of the wrong kind.
    for body in [
        json!({}),
        json!({"args": [1, 2]}),
        json!({"args": {}, "kwargs": {}}),
        json!({"args": [], "kwargs": [1]}),
    ] {
        let err = raw_call(&running, Payload::Json(body)).await;
        assert!(matches!(err, CallError::MalformedRequest(_)), "{err:?}");
    }
    // (Bytes that are not JSON never reach the service: the AMQP
    // transport answers them, see `tests/amqp.rs`.)
    // Wrong argument types.
    let err = raw_call(
        &running,
        Payload::request(vec![json!({}), json!([])], Default::default()),
    )
    .await;
    assert!(matches!(err, CallError::IncorrectSignature(_)), "{err:?}");
    // And the service still serves.
    let geo: GeometryClient = running.client();
    assert_eq!(geo.add(20, 22).await.unwrap(), 42);
    running.stop().await;
}

#[tokio::test]
async fn several_instances_share_the_calls() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Dependencies)]
    struct Counted(Arc<AtomicUsize>);
    #[service(name = "counted")]
    impl Counted {
        #[rpc]
        async fn hit(&self) -> usize {
            self.0.fetch_add(1, Ordering::Relaxed)
        }
    }
    let counters: Vec<_> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut runner = ServiceRunner::with_config(Config::new());
    for c in &counters {
        runner = runner.service(Counted(c.clone()));
    }
    let running = runner.start().await.unwrap();
    let client: CountedClient = running.client();
    for _ in 0..30 {
        client.hit().await.unwrap();
    }
    let hits: Vec<usize> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(hits, vec![10, 10, 10]);
    running.stop().await;
}

#[test]
fn the_service_describes_itself() {
    let d = Geometry::describe();
    assert_eq!(d.name, "geometry");
    let shift = d.rpc.iter().find(|r| r.name == "shift").unwrap();
    let args: Vec<(&str, &str)> = shift
        .args
        .iter()
        .map(|a| (a.name.as_str(), a.ty.as_str()))
        .collect();
    assert_eq!(
        args,
        vec![("point", "Point"), ("dx", "i32"), ("dy", "Option<i32>")]
    );
    assert_eq!(shift.returns, "Point");
    let find = d.rpc.iter().find(|r| r.name == "find").unwrap();
    assert_eq!(find.returns, "Point");
    assert_eq!(find.error.as_deref(), Some("GeometryError"));
    // It serializes for schema tooling.
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["rpc"][0]["name"], "add");
}
