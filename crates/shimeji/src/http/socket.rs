//! One WebSocket's life: the upgrade, its bounded reading and writing,
//! the RPC frames it sends, and its close.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::hub::{event_frame, Hub, Outbox};
use super::server::WebLimits;
use super::{error_body, Response};
use crate::client::Client;
use crate::context::{self, WorkerContext};
use crate::error::RemoteError;
use crate::metrics::WebSocketClose;

/// How long a socket closed for a bad message may take to say so.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What every socket of a server shares.
pub(crate) struct WsState {
    /// The runner's hub.
    pub(crate) hub: Arc<Hub>,
    /// The client that calls the services' RPC entrypoints.
    pub(crate) client: Client,
    /// The services whose RPC entrypoints answer on the hub.
    pub(crate) services: Vec<&'static str>,
    /// The bounds of every socket.
    pub(crate) limits: WebLimits,
}

pub(crate) async fn upgrade(
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    State(state): State<Arc<WsState>>,
) -> Response {
    if let (Some(allowed), Some(origin)) =
        (&state.limits.allowed_origins, headers.get(header::ORIGIN))
    {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&origin)) {
            tracing::warn!(%origin, "WebSocket upgrade from an origin not allowed: refused");
            return error_body(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "this origin may not open a WebSocket here",
            );
        }
    }
    let max = state.limits.max_message;
    ws.max_message_size(max)
        .max_frame_size(max)
        // One message in the write buffer at most: the send queue is the bound.
        .max_write_buffer_size(max.saturating_add(128 * 1024))
        .on_upgrade(move |socket| run_socket(socket, state))
}

fn result_frame(correlation_id: &Value, outcome: Result<Value, RemoteError>) -> String {
    match outcome {
        Ok(data) => json!({"type": "result", "success": true, "data": data, "correlation_id": correlation_id}),
        Err(error) => json!({"type": "result", "success": false, "error": error, "correlation_id": correlation_id}),
    }
    .to_string()
}

/// Why reading failed: tungstenite reports a message over the limit as a
/// capacity error, a vanished client as an I/O error or a reset.
fn read_failure(error: &axum::Error) -> WebSocketClose {
    let text = error.to_string();
    if text.starts_with("Space limit exceeded") {
        WebSocketClose::MessageTooLarge
    } else if text.starts_with("IO error")
        || text.starts_with("Connection closed normally")
        || text.starts_with("Trying to work with closed connection")
        || text.contains("Connection reset without closing handshake")
    {
        WebSocketClose::Client
    } else {
        WebSocketClose::ProtocolError
    }
}

/// Serves one socket: reads requests while fewer than
/// `websocket_max_in_flight` run, queues replies and pushes in its bounded
/// send queue, and closes it when a message is too large, the queue is
/// full, or the client goes.
async fn run_socket(socket: WebSocket, state: Arc<WsState>) {
    let socket_id = crate::context::new_uuid().to_string();
    let (tx, mut rx) = mpsc::channel::<String>(state.limits.send_queue);
    // Cancelled when the send queue overflows.
    let overflow = CancellationToken::new();
    let outbox = Outbox::new(tx, overflow.clone());
    let (mut sink, mut stream) = socket.split();
    let stop_writing = CancellationToken::new();
    let writer = tokio::spawn({
        let stop = stop_writing.clone();
        async move {
            loop {
                let frame = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    frame = rx.recv() => match frame {
                        Some(frame) => frame,
                        None => break,
                    },
                };
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    sent = sink.send(Message::Text(frame.into())) => if sent.is_err() { break },
                }
            }
            sink
        }
    });
    outbox.push(event_frame("connected", json!({ "socket_id": socket_id })));
    // Open to pushes from here on, the `connected` event first.
    let connect_hooks = state.hub.connected(&socket_id, outbox.clone());
    let max_in_flight = state.limits.max_in_flight;
    let mut running: JoinSet<String> = JoinSet::new();
    let reason = loop {
        tokio::select! {
            biased;
            _ = overflow.cancelled() => break WebSocketClose::SlowConsumer,
            Some(done) = running.join_next(), if !running.is_empty() => {
                // A request task that panicked already answered nothing:
                // the client sees no reply for it, as for a lost call.
                if let Ok(frame) = done {
                    if !outbox.push(frame) {
                        break if overflow.is_cancelled() {
                            WebSocketClose::SlowConsumer
                        } else {
                            WebSocketClose::Client
                        };
                    }
                }
            }
            message = stream.next(), if running.len() < max_in_flight => {
                let text = match message {
                    None | Some(Ok(Message::Close(_))) => break WebSocketClose::Client,
                    Some(Err(error)) => {
                        let reason = read_failure(&error);
                        if reason != WebSocketClose::Client {
                            tracing::warn!(%error, "WebSocket closed");
                        }
                        break reason;
                    }
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
                    Some(Ok(_)) => continue,
                };
                let state = state.clone();
                let socket_id = socket_id.clone();
                running.spawn(async move { handle_frame(&state, &socket_id, &text).await });
            }
        }
    };
    state.hub.disconnected(&socket_id, connect_hooks);
    // Requests still running finish; their replies have nowhere to go.
    running.detach_all();
    stop_writing.cancel();
    let close = match reason {
        WebSocketClose::MessageTooLarge => Some((1009, "message too large")),
        WebSocketClose::ProtocolError => Some((1002, "protocol error")),
        // A client that does not read would not read this either.
        WebSocketClose::SlowConsumer | WebSocketClose::Client => None,
    };
    if let (Ok(mut sink), Some((code, why))) = (writer.await, close) {
        let frame = CloseFrame {
            code,
            reason: why.into(),
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await;
    }
    crate::metrics::websocket_closed(reason);
}

/// One client frame: `{"method": "service.method", "data": {…}, "correlation_id": …}`.
async fn handle_frame(state: &WsState, socket_id: &str, text: &str) -> String {
    let request: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return result_frame(
                &Value::Null,
                Err(RemoteError::malformed_request(format!(
                    "frame is not valid JSON: {e}"
                ))),
            );
        }
    };
    let correlation_id = request
        .get("correlation_id")
        .cloned()
        .unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return result_frame(
            &correlation_id,
            Err(RemoteError::malformed_request("frame has no `method`")),
        );
    };
    let Some((service, name)) = method
        .split_once('.')
        .filter(|(s, _)| state.services.contains(s))
    else {
        return result_frame(&correlation_id, Err(RemoteError::method_not_found(method)));
    };
    let data = match request.get("data") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v @ (Value::Object(_) | Value::Array(_))) => v.clone(),
        Some(_) => {
            return result_frame(
                &correlation_id,
                Err(RemoteError::malformed_request("`data` must be an object")),
            );
        }
    };
    let root = WorkerContext::root().with_data("socket_id", socket_id);
    let outcome = context::scope(root, state.client.call(service, name, data))
        .await
        .map_err(|e| crate::Exception::to_remote(&e));
    result_frame(&correlation_id, outcome)
}
