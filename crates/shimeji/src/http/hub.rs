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
//!
//! # Socket data and connect and disconnect hooks
//!
//! A service may store data for a socket (`hub.set_data(socket_id, "user_id",
//! …)`, read back with `hub.data(socket_id)`), and have hooks run when a
//! socket connects and when it disconnects, whichever side closed it (the
//! client, or the server: a message too large, a client too slow to read).
//! A disconnect hook gets the socket's id and everything stored for it, so
//! a service can tell who went away. Set the hooks when the service is
//! built ([`WebSocketHub::on_connect`], [`WebSocketHub::on_disconnect`]);
//! a hook captures what it needs (an event dispatcher, a client, a store),
//! each a clone of a dependency field, which shares its setup.
//!
//! A hook runs once per socket and service, however many instances of the
//! service run (the first instance's hooks), on its own task, as a worker
//! of its service: its context has a call id (`presence.on_disconnect.…`)
//! and the socket's `socket_id`, so its logs, calls and events carry them.
//! A socket's disconnect hooks run after its connect hooks finished. A
//! hook that fails or panics is logged; the server serves on. Hooks run
//! while their service runs: a socket that closes after it stopped runs
//! none.
//!
//! Why hooks on the hub and not entrypoints: WebSocket RPC reaches a
//! service through the runner's client and its transport (on AMQP, maybe
//! an instance in another process). A socket's coming and going happens in
//! this process, to this runner's services, and no client may trigger it:
//! an RPC method for it could be called over any socket to fake a
//! disconnect. So a hook runs in process, from the hub the service already
//! holds.
//!
//! ```
//! use shimeji::prelude::*;
//! use shimeji::http::{SocketInfo, WebSocketHub};
//!
//! #[derive(Dependencies)]
//! struct Presence {
//!     hub: WebSocketHub,
//!     events: EventDispatcher,
//! }
//!
//! impl Default for Presence {
//!     fn default() -> Self {
//!         let events = EventDispatcher::default();
//!         let dispatcher = events.clone();
//!         let hub = WebSocketHub::default().on_disconnect(move |socket: SocketInfo| {
//!             let events = dispatcher.clone();
//!             async move {
//!                 // Only sockets that signed in have a user.
//!                 if let Some(user) = socket.data.get("user_id") {
//!                     events.dispatch("user_offline", user).await?;
//!                 }
//!                 Ok(())
//!             }
//!         });
//!         Presence { hub, events }
//!     }
//! }
//!
//! #[service(name = "presence", websocket)]
//! impl Presence {
//!     /// Called over the socket once its user signed in.
//!     #[rpc]
//!     async fn sign_in(&self, user_id: String) -> bool {
//!         let ctx = shimeji::context::current().unwrap();
//!         let socket = ctx.data("socket_id").and_then(|v| v.as_str()).unwrap_or_default();
//!         self.hub.set_data(socket, "user_id", &user_id)
//!     }
//! }
//! ```

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::hooks::{self, HookError, Hooks, ServiceHooks, SocketEvent, SocketInfo};
use crate::dependency::{Dependency, DependencyError, SetupContext};
use crate::sync::lock;

/// Every open socket, every channel's subscribers and the services'
/// socket hooks, for one runner.
#[derive(Default)]
pub(crate) struct Hub {
    sockets: Mutex<HashMap<String, Socket>>,
    channels: Mutex<HashMap<String, HashSet<String>>>,
    hooks: Mutex<Vec<ServiceHooks>>,
}

/// An open socket: its way out, and what services stored for it.
struct Socket {
    outbox: Outbox,
    data: Map<String, Value>,
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

/// The frame of a pushed event.
pub(crate) fn event_frame(event: &str, data: Value) -> String {
    json!({ "type": "event", "event": event, "data": data }).to_string()
}

impl Hub {
    /// A socket opened: pushes reach it from now on. Starts the services'
    /// connect hooks; the handle ends when they did.
    pub(crate) fn connected(&self, socket_id: &str, outbox: Outbox) -> Option<JoinHandle<()>> {
        let socket = Socket {
            outbox,
            data: Map::new(),
        };
        lock(&self.sockets).insert(socket_id.to_string(), socket);
        let info = SocketInfo {
            socket_id: socket_id.to_string(),
            data: Map::new(),
        };
        hooks::spawn(self.service_hooks(), SocketEvent::Connect, info, None)
    }

    /// A socket closed: it leaves its channels, and the services'
    /// disconnect hooks run with its data once its connect hooks (`after`)
    /// are done.
    pub(crate) fn disconnected(&self, socket_id: &str, after: Option<JoinHandle<()>>) {
        let data = lock(&self.sockets)
            .remove(socket_id)
            .map(|socket| socket.data)
            .unwrap_or_default();
        lock(&self.channels).retain(|_, subscribers| {
            subscribers.remove(socket_id);
            !subscribers.is_empty()
        });
        let info = SocketInfo {
            socket_id: socket_id.to_string(),
            data,
        };
        hooks::spawn(self.service_hooks(), SocketEvent::Disconnect, info, after);
    }

    fn service_hooks(&self) -> Vec<ServiceHooks> {
        lock(&self.hooks).clone()
    }

    /// Adds a service's hooks, unless it has some already (an instance of
    /// it started first).
    fn add_hooks(&self, hooks: ServiceHooks) {
        let mut all = lock(&self.hooks);
        if !all.iter().any(|h| h.service == hooks.service) {
            all.push(hooks);
        }
    }

    /// Removes the hooks shared with one `WebSocketHub` field.
    fn remove_hooks(&self, hooks: &Arc<Mutex<Hooks>>) {
        lock(&self.hooks).retain(|h| !Arc::ptr_eq(&h.hooks, hooks));
    }

    fn send(&self, socket_id: &str, frame: String) -> bool {
        lock(&self.sockets)
            .get(socket_id)
            .is_some_and(|socket| socket.outbox.push(frame))
    }
}

/// A service's access to the WebSocket hub (Nameko's `WebSocketHubProvider`).
///
/// Clones share one hub, and one set of hooks.
#[derive(Clone, Default)]
pub struct WebSocketHub {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    hub: OnceLock<Arc<Hub>>,
    hooks: Arc<Mutex<Hooks>>,
}

impl WebSocketHub {
    fn hub(&self) -> Option<&Arc<Hub>> {
        let hub = self.shared.hub.get();
        if hub.is_none() {
            tracing::warn!("WebSocketHub used before its service started: nothing sent");
        }
        hub
    }

    /// Has `hook` run whenever a socket connects, with its id (and no data
    /// yet), as a worker of this field's service (`{service}.on_connect.…`).
    /// Set it when the service is built. A failure or panic is logged.
    pub fn on_connect<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(SocketInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HookError>> + Send + 'static,
    {
        lock(&self.shared.hooks).on_connect = Some(hooks::hook(hook));
        self
    }

    /// Has `hook` run whenever a socket disconnects, whichever side closed
    /// it, with its id and the data stored for it, as a worker of this
    /// field's service (`{service}.on_disconnect.…`), after the socket's
    /// connect hooks. Set it when the service is built. A failure or panic
    /// is logged.
    pub fn on_disconnect<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(SocketInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HookError>> + Send + 'static,
    {
        lock(&self.shared.hooks).on_disconnect = Some(hooks::hook(hook));
        self
    }

    /// Stores `value` under `key` for socket `socket_id`, for
    /// [`data`](Self::data) and its disconnect hooks; false when no such
    /// socket is open.
    pub fn set_data(&self, socket_id: &str, key: &str, value: impl Serialize) -> bool {
        let Some(hub) = self.hub() else { return false };
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        let mut sockets = lock(&hub.sockets);
        let Some(socket) = sockets.get_mut(socket_id) else {
            return false;
        };
        socket.data.insert(key.to_string(), value);
        true
    }

    /// The data stored for socket `socket_id`; `None` when no such socket
    /// is open.
    pub fn data(&self, socket_id: &str) -> Option<Map<String, Value>> {
        let hub = self.hub()?;
        let sockets = lock(&hub.sockets);
        sockets.get(socket_id).map(|socket| socket.data.clone())
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
        if !lock(&self.shared.hooks).is_empty() {
            hub.add_hooks(ServiceHooks {
                service: ctx.service(),
                parent_calls_tracked: ctx.config().parent_calls_tracked(),
                hooks: self.shared.hooks.clone(),
            });
        }
        let _ = self.shared.hub.set(hub);
        Box::pin(async { Ok(()) })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        if let Some(hub) = self.shared.hub.get() {
            hub.remove_hooks(&self.shared.hooks);
        }
        Box::pin(async {})
    }
}
