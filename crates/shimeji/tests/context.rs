//! The worker context follows every call and event: call ids, the call id
//! stack and context data.

use serde_json::json;
use shimeji::context::{self, WorkerContext};
use shimeji::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What service C saw: its call id stack and its context data.
type Seen = Arc<Mutex<Option<(Vec<String>, serde_json::Map<String, serde_json::Value>)>>>;

#[derive(Default, Dependencies)]
struct A {
    b: BClient,
}

#[service(name = "svc_a")]
impl A {
    #[rpc]
    async fn go(&self) -> Result<String, CallError> {
        self.b.go().await
    }
}

#[derive(Default, Dependencies)]
struct B {
    c: CClient,
}

#[service(name = "svc_b")]
impl B {
    #[rpc]
    async fn go(&self) -> Result<String, CallError> {
        self.c.go().await
    }
}

#[derive(Dependencies)]
struct C {
    seen: Seen,
}

#[service(name = "svc_c")]
impl C {
    #[rpc]
    async fn go(&self) -> String {
        let ctx = context::current().expect("an entrypoint runs in a worker context");
        *self.seen.lock().unwrap() = Some((ctx.call_id_stack(), ctx.data_map().clone()));
        ctx.call_id().unwrap()
    }
}

fn assert_call_id(id: &str, service: &str, method: &str) {
    let parts: Vec<&str> = id.splitn(3, '.').collect();
    assert_eq!(parts.len(), 3, "{id}");
    assert_eq!((parts[0], parts[1]), (service, method), "{id}");
    assert!(
        uuid::Uuid::parse_str(parts[2]).is_ok(),
        "not a uuid in {id}"
    );
}

#[tokio::test]
async fn chain_a_b_c_carries_the_stack_and_the_data() {
    let seen = Seen::default();
    let running = ServiceRunner::with_config(Config::new())
        .service(A::default())
        .service(B::default())
        .service(C { seen: seen.clone() })
        .start()
        .await
        .unwrap();
    let a: AClient = running.client();
    let root = WorkerContext::root()
        .with_data("user_id", "u-42")
        .with_data("language", "fr")
        .with_data("auth_token", "secret-token")
        .with_data("tenant", json!({"id": 7}));
    let c_call_id = context::scope(root, a.go()).await.unwrap();

    let (stack, data) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(stack.len(), 3, "{stack:?}");
    assert_call_id(&stack[0], "svc_a", "go");
    assert_call_id(&stack[1], "svc_b", "go");
    assert_call_id(&stack[2], "svc_c", "go");
    assert_eq!(stack[2], c_call_id);
    assert_eq!(data["user_id"], "u-42");
    assert_eq!(data["language"], "fr");
    assert_eq!(data["auth_token"], "secret-token");
    assert_eq!(data["tenant"], json!({"id": 7}));
    running.stop().await;
}

struct Deep {
    deepest: Arc<Mutex<Vec<String>>>,
    me: DeepClient,
}

impl shimeji::Dependencies for Deep {
    fn dependencies(&self) -> Vec<&dyn shimeji::Dependency> {
        vec![&self.me]
    }
}

#[service(name = "deep")]
impl Deep {
    #[rpc]
    async fn recurse(&self, n: u32) -> Result<u32, CallError> {
        if n == 0 {
            let ctx = context::current().unwrap();
            *self.deepest.lock().unwrap() = ctx.call_id_stack();
            return Ok(0);
        }
        self.me.recurse(n - 1).await
    }
}

#[tokio::test]
async fn the_stack_is_capped_at_parent_calls_tracked() {
    let deepest = Arc::new(Mutex::new(Vec::new()));
    let running = ServiceRunner::with_config(
        Config::new()
            .set("parent_calls_tracked", 3)
            .set("max_workers", 20),
    )
    .service(Deep {
        deepest: deepest.clone(),
        me: DeepClient::default(),
    })
    .start()
    .await
    .unwrap();
    running.client::<DeepClient>().recurse(12).await.unwrap();
    let stack = deepest.lock().unwrap().clone();
    assert_eq!(stack.len(), 4, "3 parents and the worker itself: {stack:?}");
    running.stop().await;

    // The default keeps 10 parents (11 entries), as in Nameko.
    let deepest = Arc::new(Mutex::new(Vec::new()));
    let running = ServiceRunner::with_config(Config::new().set("max_workers", 20))
        .service(Deep {
            deepest: deepest.clone(),
            me: DeepClient::default(),
        })
        .start()
        .await
        .unwrap();
    running.client::<DeepClient>().recurse(13).await.unwrap();
    assert_eq!(deepest.lock().unwrap().len(), 11);
    running.stop().await;
}

#[derive(Default, Dependencies)]
struct Emitter {
    events: EventDispatcher,
}

#[service(name = "emitter")]
impl Emitter {
    #[rpc]
    async fn emit(&self) -> Result<String, DispatchError> {
        self.events.dispatch("ping", json!({})).await?;
        Ok(context::current().unwrap().call_id().unwrap())
    }
}

#[derive(Dependencies)]
struct Listener {
    seen: Seen,
}

#[service(name = "listener")]
impl Listener {
    #[event_handler("emitter", "ping")]
    async fn on_ping(&self, _payload: serde_json::Value) {
        let ctx = context::current().unwrap();
        *self.seen.lock().unwrap() = Some((ctx.call_id_stack(), ctx.data_map().clone()));
    }
}

#[tokio::test]
async fn dispatched_events_carry_the_context() {
    let seen = Seen::default();
    let running = ServiceRunner::with_config(Config::new())
        .service(Emitter::default())
        .service(Listener { seen: seen.clone() })
        .start()
        .await
        .unwrap();
    let waiter = running.entrypoint_waiter("listener", "on_ping");
    let root = WorkerContext::root().with_data("user_id", "u-1");
    let emitter_id = context::scope(root, running.client::<EmitterClient>().emit())
        .await
        .unwrap();
    waiter.wait(Duration::from_secs(2)).await.unwrap();
    let (stack, data) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(stack.len(), 2, "{stack:?}");
    assert_eq!(stack[0], emitter_id);
    assert_call_id(&stack[1], "listener", "on_ping");
    assert_eq!(data["user_id"], "u-1");
    running.stop().await;
}

#[tokio::test]
async fn spawn_carries_the_context_into_new_tasks() {
    let root = WorkerContext::root().with_data("user_id", "u-9");
    let (inside, plain) = context::scope(root, async {
        let inside = shimeji::spawn(async {
            context::current().and_then(|c| c.user_id().map(String::from))
        });
        let plain = tokio::spawn(async { context::current().is_some() });
        (inside.await.unwrap(), plain.await.unwrap())
    })
    .await;
    assert_eq!(inside.as_deref(), Some("u-9"));
    assert!(
        !plain,
        "tokio::spawn does not carry the context; shimeji::spawn does"
    );
}

#[test]
fn debug_output_hides_context_values() {
    let ctx = WorkerContext::root().with_data("auth_token", "hunter2");
    let shown = format!("{ctx:?}");
    assert!(shown.contains("auth_token"));
    assert!(!shown.contains("hunter2"), "{shown}");
}
