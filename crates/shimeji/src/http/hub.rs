//! The WebSocket hub: Nameko's websocket RPC plus server push.
//!
//! A browser connects to `/ws` and gets
//! `{"type": "event", "event": "connected", "data": {"socket_id": "…"}}`. It
//! calls RPC entrypoints of services marked `#[service(…, websocket)]` by
//! sending `{"method": "service.method", "data": {…}, "correlation_id": …}`
//! and gets `{"type": "result", "success": true, "data": …, "correlation_id": …}`
//! or `{"type": "result", "success": false, "error": {…}, "correlation_id": …}`.
//! The entrypoint sees the caller's `socket_id` in its context data.
//!
//! Services push through a [`WebSocketHub`] field: subscribe a socket to a
//! channel, broadcast to a channel, unicast to a socket. Pushes arrive as
//! `{"type": "event", "event": …, "data": …}`.
//!
//! Each socket is bounded, whatever its client does (keys of the runner's
//! configuration):
//!
//! | key | default | what |
//! |---|---|---|
//! | `websocket_max_message_size` | `max_body_size` (2 MiB) | largest message (and frame) a client may send, in bytes; a larger one closes the socket with code 1009 |
//! | `websocket_max_in_flight` | 16 | requests of one socket running at once; while that many run, the socket is not read (backpressure) |
//! | `websocket_send_queue` | 256 | frames (replies and pushes) waiting to be written to one socket; a client that lets it fill up is not reading, and its socket is closed |
//! | `websocket_allowed_origins` | any | a list of origins (`["https://app.example.com"]`); when set, an upgrade whose `Origin` header is another gets 403 (a request without `Origin`, from no browser, is let in) |
//!
//! `shimeji_websocket_closed_total{reason}` counts sockets closed, by
//! reason: `client`, `message_too_large`, `slow_consumer`, `protocol_error`.
//! A push to a socket that was closed returns false.
//!
//! ```
//! use shimeji::prelude::*;
//! use shimeji::http::WebSocketHub;
//!
//! #[derive(Default, Dependencies)]
//! struct Chat {
//!     hub: WebSocketHub,
//! }
//!
//! #[service(name = "chat", websocket)]
//! impl Chat {
//!     /// Called over the socket: subscribes the caller to a room.
//!     #[rpc]
//!     async fn join(&self, room: String) -> bool {
//!         let ctx = shimeji::context::current().unwrap();
//!         let socket = ctx.data("socket_id").and_then(|v| v.as_str()).unwrap_or_default();
//!         self.hub.subscribe(socket, &room)
//!     }
//!
//!     #[rpc]
//!     async fn say(&self, room: String, text: String) -> usize {
//!         self.hub.broadcast(&room, "message", serde_json::json!({ "text": text }))
//!     }
//! }
//! ```

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use crate::dependency::{Dependency, DependencyError, SetupContext};

/// Every open socket and every channel's subscribers, for one runner.
#[derive(Default)]
pub(crate) struct Hub {
    sockets: Mutex<HashMap<String, Outbox>>,
    channels: Mutex<HashMap<String, HashSet<String>>>,
}

/// A socket's way out: a bounded queue of frames, and the token that
/// closes the socket when the queue is full (its client does not read).
#[derive(Clone)]
pub(crate) struct Outbox {
    frames: mpsc::Sender<String>,
    overflow: CancellationToken,
}

impl Outbox {
    /// An outbox over `frames`; a frame that does not fit cancels `overflow`.
    pub(crate) fn new(frames: mpsc::Sender<String>, overflow: CancellationToken) -> Self {
        Outbox { frames, overflow }
    }

    /// Queues `frame` without waiting. False when the socket is gone, or
    /// its queue is full: then the socket is closed (a client that does
    /// not read gets nothing more, and holds no more memory).
    pub(crate) fn push(&self, frame: String) -> bool {
        match self.frames.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.overflow.cancel();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The frame of a pushed event.
pub(crate) fn event_frame(event: &str, data: Value) -> String {
    json!({ "type": "event", "event": event, "data": data }).to_string()
}

impl Hub {
    pub(crate) fn register(&self, socket_id: &str, outbox: Outbox) {
        lock(&self.sockets).insert(socket_id.to_string(), outbox);
    }

    pub(crate) fn unregister(&self, socket_id: &str) {
        lock(&self.sockets).remove(socket_id);
        lock(&self.channels).retain(|_, subscribers| {
            subscribers.remove(socket_id);
            !subscribers.is_empty()
        });
    }

    fn send(&self, socket_id: &str, frame: String) -> bool {
        lock(&self.sockets)
            .get(socket_id)
            .is_some_and(|outbox| outbox.push(frame))
    }
}

/// A service's access to the WebSocket hub (Nameko's `WebSocketHubProvider`).
#[derive(Clone, Default)]
pub struct WebSocketHub {
    hub: Arc<OnceLock<Arc<Hub>>>,
}

impl WebSocketHub {
    fn hub(&self) -> Option<&Arc<Hub>> {
        let hub = self.hub.get();
        if hub.is_none() {
            tracing::warn!("WebSocketHub used before its service started: nothing sent");
        }
        hub
    }

    /// Subscribes socket `socket_id` to `channel`; false when no such socket is open.
    pub fn subscribe(&self, socket_id: &str, channel: &str) -> bool {
        let Some(hub) = self.hub() else { return false };
        if !lock(&hub.sockets).contains_key(socket_id) {
            return false;
        }
        lock(&hub.channels)
            .entry(channel.to_string())
            .or_default()
            .insert(socket_id.to_string());
        true
    }

    /// Unsubscribes socket `socket_id` from `channel`.
    pub fn unsubscribe(&self, socket_id: &str, channel: &str) {
        if let Some(hub) = self.hub() {
            if let Some(subscribers) = lock(&hub.channels).get_mut(channel) {
                subscribers.remove(socket_id);
            }
        }
    }

    /// Pushes `event` with `data` to every subscriber of `channel`; returns
    /// how many sockets it reached.
    pub fn broadcast(&self, channel: &str, event: &str, data: impl Serialize) -> usize {
        let Some(hub) = self.hub() else { return 0 };
        let frame = event_frame(event, serde_json::to_value(data).unwrap_or(Value::Null));
        let subscribers: Vec<String> = lock(&hub.channels)
            .get(channel)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        subscribers
            .iter()
            .filter(|id| hub.send(id, frame.clone()))
            .count()
    }

    /// Pushes `event` with `data` to one socket; false when it is not open.
    pub fn unicast(&self, socket_id: &str, event: &str, data: impl Serialize) -> bool {
        let Some(hub) = self.hub() else { return false };
        hub.send(
            socket_id,
            event_frame(event, serde_json::to_value(data).unwrap_or(Value::Null)),
        )
    }
}

impl Dependency for WebSocketHub {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        // Outside a runner (a setup context made by hand) the hub has no sockets.
        let hub = ctx.get::<Arc<Hub>>().cloned().unwrap_or_default();
        let _ = self.hub.set(hub);
        Box::pin(async { Ok(()) })
    }
}
