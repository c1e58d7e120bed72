//! The push service: a Socket.IO endpoint at `/socket.io` (socketioxide,
//! served by this service's HTTP entrypoints) that a stock Socket.IO client
//! (python-socketio 5, socket.io-client 4) uses as the original's:
//!
//! - `ping_user(token)`: marks the token's user online; a refused token gets
//!   `expired_token` (to this socket only);
//! - `post_message(data, token)`: posts `data.source` as the token's user;
//!   the message comes back to everyone as `updated_model`. A client that
//!   asks for an acknowledgement (the original's clients do not) gets the
//!   stored message, or `{"error": …}`, so it knows its post landed; with
//!   `data.client_key` it can resend a post it got no acknowledgement for
//!   without storing it twice;
//! - disconnect: the socket's user goes offline (unless another socket of
//!   theirs is still connected here) — but not when this instance is
//!   stopping: its sockets are closed after its deregistration, so clients
//!   reconnect to another instance through the router, and their users stay
//!   online.
//!
//! Every instance relays every `updated_model` of users and messages to its
//! own sockets (broadcast event handlers), so any number of push instances
//! works. A client that reconnects catches up with `updated_since` over
//! the REST API.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shimeji::prelude::*;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::socket::DisconnectReason;
use socketioxide::SocketIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

use crate::auth::{Auth, Revocation};
use crate::messages::MessagesClient;
use crate::tokens::TokensClient;
use crate::users::UsersClient;

/// The user a socket has shown a valid token for.
#[derive(Debug, Clone, Copy)]
struct SocketUser(i64);

/// The Socket.IO server of a push instance.
#[derive(Clone)]
pub struct SocketIoServer {
    serve: Arc<dyn Fn(Request) -> BoxFuture<'static, Response> + Send + Sync>,
    io: SocketIo,
    posting: Arc<InFlight>,
}

/// Posts being handled: a stopping instance lets them finish (and
/// acknowledge) before it closes the sockets.
#[derive(Default)]
struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One post in flight, until dropped.
struct Posting(Arc<InFlight>);

impl InFlight {
    fn enter(self: &Arc<Self>) -> Posting {
        self.count.fetch_add(1, Ordering::SeqCst);
        Posting(self.clone())
    }

    /// Waits until no post is in flight.
    async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Posting {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl SocketIoServer {
    /// Answers a Socket.IO request (polling or WebSocket upgrade).
    async fn serve(&self, request: Request) -> Response {
        (self.serve)(request).await
    }

    /// Emits an event to every socket of this instance.
    async fn emit(&self, event: &str, data: &Value) {
        if let Err(e) = self.io.emit(event, data).await {
            tracing::debug!(error = %e, "Socket.IO emit failed");
        }
    }
}

/// How long a stopping instance waits for its sockets to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Dependency for SocketIoServer {
    /// The instance is deregistered and routers send it nothing new: close
    /// every socket (long polls included, which would hold the drain), so
    /// each client reconnects to another instance — once the posts in
    /// flight are stored and acknowledged, so their clients need not send
    /// them again.
    fn draining(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let sockets = self.io.sockets().len();
            if tokio::time::timeout(CLOSE_TIMEOUT, self.posting.idle())
                .await
                .is_err()
            {
                tracing::warn!("Socket.IO: posts still in flight after {CLOSE_TIMEOUT:?}");
            }
            if tokio::time::timeout(CLOSE_TIMEOUT, self.io.close())
                .await
                .is_err()
            {
                tracing::warn!("Socket.IO: sockets still open after {CLOSE_TIMEOUT:?}");
            }
            tracing::info!(sockets, "Socket.IO: closed this instance's sockets");
        })
    }
}

/// The arguments of an event: several are sent as an array.
fn arguments(data: Value) -> Vec<Value> {
    match data {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// What the Socket.IO handlers use, cloned into each.
#[derive(Clone)]
struct Handlers {
    posting: Arc<InFlight>,
    auth: Auth,
    users: UsersClient,
    messages: MessagesClient,
}

impl Handlers {
    /// The user of `token`; a refused token gets `expired_token`.
    fn user(&self, socket: &SocketRef, token: Option<&Value>) -> Option<i64> {
        match token
            .and_then(Value::as_str)
            .and_then(|t| self.auth.verify(t))
        {
            Some(claims) => {
                socket.extensions.insert(SocketUser(claims.user_id));
                Some(claims.user_id)
            }
            None => {
                let _ = socket.emit("expired_token", &());
                None
            }
        }
    }

    async fn ping_user(self, socket: SocketRef, data: Value) {
        let args = arguments(data);
        let Some(user_id) = self.user(&socket, args.first()) else {
            return;
        };
        match self.users.ping(user_id).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = socket.emit("expired_token", &());
            }
            Err(e) => tracing::warn!(error = %e, "ping_user: users unavailable"),
        }
    }

    async fn post_message(self, socket: SocketRef, (data, token): (Value, Value), ack: AckSender) {
        let _posting = self.posting.enter();
        let Some(user_id) = self.user(&socket, Some(&token)) else {
            let _ = ack.send(&serde_json::json!({ "error": "expired_token" }));
            return;
        };
        let source = data
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        // A client that resends a post it got no acknowledgement for sends
        // the same key: it is stored once.
        let key = data
            .get("client_key")
            .and_then(Value::as_str)
            .map(str::to_string);
        // Sent only when the client asked for an acknowledgement.
        let _ = match self.messages.post(user_id, source, key).await {
            Ok(message) => ack.send(&message),
            Err(e) => {
                tracing::debug!(error = %e, "post_message refused");
                ack.send(&serde_json::json!({ "error": e.to_string() }))
            }
        };
    }

    async fn disconnected(self, socket: SocketRef, io: SocketIo, reason: DisconnectReason) {
        if reason == DisconnectReason::ClosingServer {
            // This instance is stopping: the client reconnects elsewhere.
            return;
        }
        let Some(SocketUser(user_id)) = socket.extensions.get::<SocketUser>() else {
            return;
        };
        let others = || {
            io.sockets().into_iter().any(|s| {
                s.id != socket.id
                    && s.extensions
                        .get::<SocketUser>()
                        .is_some_and(|u| u.0 == user_id)
            })
        };
        if others() {
            return;
        }
        if let Err(e) = self.users.sign_out(user_id).await {
            tracing::warn!(error = %e, "disconnect: users unavailable");
            return;
        }
        // A page reloaded: its new socket may have pinged while the sign-out
        // was on its way, and the sign-out landed last. Online again.
        if others() {
            if let Err(e) = self.users.ping(user_id).await {
                tracing::warn!(error = %e, "disconnect: users unavailable");
            }
        }
    }
}

/// The push service.
#[derive(Dependencies)]
pub struct Push {
    auth: Auth,
    users: UsersClient,
    messages: MessagesClient,
    tokens: TokensClient,
    socket_io: SocketIoServer,
}

impl Default for Push {
    fn default() -> Self {
        let auth = Auth::default();
        let users = UsersClient::default();
        let messages = MessagesClient::default();
        let (service, io) = SocketIo::new_svc();
        let serve = Arc::new(move |request: Request| -> BoxFuture<'static, Response> {
            let service = service.clone();
            Box::pin(async move {
                match service.oneshot(request).await {
                    Ok(response) => response.map(axum::body::Body::new).into_response(),
                    Err(never) => match never {},
                }
            })
        });
        let posting = Arc::new(InFlight::default());
        let handlers = Handlers {
            posting: posting.clone(),
            auth: auth.clone(),
            users: users.clone(),
            messages: messages.clone(),
        };
        let io_for_disconnect = io.clone();
        io.ns("/", move |socket: SocketRef| {
            let handlers = handlers.clone();
            let io = io_for_disconnect.clone();
            async move {
                let h = handlers.clone();
                socket.on("ping_user", move |s: SocketRef, Data(data): Data<Value>| {
                    h.clone().ping_user(s, data)
                });
                let h = handlers.clone();
                socket.on(
                    "post_message",
                    move |s: SocketRef, Data(data): Data<(Value, Value)>, ack: AckSender| {
                        h.clone().post_message(s, data, ack)
                    },
                );
                let h = handlers;
                socket.on_disconnect(move |s: SocketRef, reason: DisconnectReason| {
                    h.clone().disconnected(s, io.clone(), reason)
                });
            }
        });
        Push {
            auth,
            users,
            messages,
            tokens: TokensClient::default(),
            socket_io: SocketIoServer { serve, io, posting },
        }
    }
}

#[service(name = "push")]
impl Push {
    /// Socket.IO: handshakes, long polling, WebSocket upgrades.
    #[http(GET, "/socket.io/")]
    async fn socket_io_get(&self, request: Request) -> Response {
        self.socket_io.serve(request).await
    }

    /// Socket.IO: long-polling packets from the client.
    #[http(POST, "/socket.io/")]
    async fn socket_io_post(&self, request: Request) -> Response {
        self.socket_io.serve(request).await
    }

    /// A user changed: tell this instance's sockets.
    #[event_handler("users", "updated_model", handler_type = "broadcast")]
    async fn user_updated(&self, event: Value) {
        self.socket_io.emit("updated_model", &event).await;
    }

    /// A message changed: tell this instance's sockets.
    #[event_handler("messages", "updated_model", handler_type = "broadcast")]
    async fn message_updated(&self, event: Value) {
        self.socket_io.emit("updated_model", &event).await;
    }

    /// A token was revoked: every instance learns it at once.
    #[event_handler("tokens", "token_revoked", handler_type = "broadcast")]
    async fn token_revoked(&self, revocation: Revocation) {
        self.auth.revoke(&revocation);
    }

    /// The whole revocation list: at start (retried every second until
    /// the tokens service answers), then every 10 s.
    #[timer(interval = "1s", eager = true)]
    async fn sync_revocations(&self) {
        crate::tokens::sync_revocations(&self.auth, &self.tokens).await;
    }
}
