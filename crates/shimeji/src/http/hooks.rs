//! Socket hooks: what a service runs when a WebSocket connects or
//! disconnects (see the [hub's docs](super::WebSocketHub)).
//!
//! A hook runs on its own task, in a worker context of its service
//! (`{service}.on_connect.{uuid}` or `{service}.on_disconnect.{uuid}`,
//! with the socket's `socket_id` in its context data), so its log lines
//! and the calls and events it makes carry a call id. It is not counted in
//! `max_workers`, and a stopping service does not wait for it. A hook that
//! fails or panics is logged, and nothing else happens: the socket, the
//! server and the other hooks go on.

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{Map, Value};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

use crate::context::{self, WorkerContext};

/// A socket, as its hooks see it.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketInfo {
    /// The socket's id: what its client got in the `connected` event, and
    /// what entrypoints called over it find as `socket_id` in their context.
    pub socket_id: String,
    /// What services stored for the socket with
    /// [`WebSocketHub::set_data`](super::WebSocketHub::set_data): empty when
    /// it connects, everything stored until it closed when it disconnects.
    pub data: Map<String, Value>,
}

/// Why a hook failed: any error.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// A hook, boxed.
pub(crate) type Hook =
    Arc<dyn Fn(SocketInfo) -> BoxFuture<'static, Result<(), HookError>> + Send + Sync>;

/// Boxes `hook`.
pub(crate) fn hook<F, Fut>(hook: F) -> Hook
where
    F: Fn(SocketInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HookError>> + Send + 'static,
{
    Arc::new(move |socket| Box::pin(hook(socket)))
}

/// The hooks of one [`WebSocketHub`](super::WebSocketHub) field.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) on_connect: Option<Hook>,
    pub(crate) on_disconnect: Option<Hook>,
}

impl Hooks {
    pub(crate) fn is_empty(&self) -> bool {
        self.on_connect.is_none() && self.on_disconnect.is_none()
    }
}

/// A service's hooks, as its hub holds them.
#[derive(Clone)]
pub(crate) struct ServiceHooks {
    /// The service: its hooks run as its workers.
    pub(crate) service: &'static str,
    /// The `parent_calls_tracked` of its workers.
    pub(crate) parent_calls_tracked: usize,
    /// Shared with its `WebSocketHub` field.
    pub(crate) hooks: Arc<Mutex<Hooks>>,
}

/// Which event a hook answers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SocketEvent {
    Connect,
    Disconnect,
}

impl SocketEvent {
    /// The entrypoint name its workers carry.
    fn entrypoint(self) -> &'static str {
        match self {
            SocketEvent::Connect => "on_connect",
            SocketEvent::Disconnect => "on_disconnect",
        }
    }
}

/// Runs `event`'s hook of each of `services` for `socket`, one after the
/// other, on a task of its own that first waits for `after` (a socket's
/// disconnect hooks wait for its connect hooks). `None` when no service
/// has a hook for the event.
pub(crate) fn spawn(
    services: Vec<ServiceHooks>,
    event: SocketEvent,
    socket: SocketInfo,
    after: Option<JoinHandle<()>>,
) -> Option<JoinHandle<()>> {
    let hooks: Vec<(ServiceHooks, Hook)> = services
        .into_iter()
        .filter_map(|s| {
            let hooks = crate::sync::lock(&s.hooks);
            let hook = match event {
                SocketEvent::Connect => hooks.on_connect.clone(),
                SocketEvent::Disconnect => hooks.on_disconnect.clone(),
            }?;
            drop(hooks);
            Some((s, hook))
        })
        .collect();
    if hooks.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        if let Some(before) = after {
            let _ = before.await;
        }
        for (service, hook) in hooks {
            run(&service, event, &hook, socket.clone()).await;
        }
    }))
}

/// Runs one hook as a worker of its service; logs how it failed, if it did.
async fn run(service: &ServiceHooks, event: SocketEvent, hook: &Hook, socket: SocketInfo) {
    let name = service.service;
    let entrypoint = event.entrypoint();
    let caller = WorkerContext::root().with_data("socket_id", socket.socket_id.clone());
    let worker =
        WorkerContext::for_worker(name, entrypoint, Some(caller), service.parent_calls_tracked);
    let socket_id = socket.socket_id.clone();
    let ran = async move {
        // A hook may panic while it builds its future, or while it runs.
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| hook(socket))) {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(service = name, hook = entrypoint, socket_id, %error, "WebSocket hook failed");
            }
            Err(panic) => {
                let panic = crate::container::panic_message(panic.as_ref());
                tracing::error!(service = name, hook = entrypoint, socket_id, %panic, "WebSocket hook panicked");
            }
        }
    };
    context::scope(worker, ran).await;
}
