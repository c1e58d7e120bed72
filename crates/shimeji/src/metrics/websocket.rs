//! WebSockets the HTTP server closed, by reason.

/// Why the server closed a WebSocket: the `reason` label of
/// `shimeji_websocket_closed_total`, a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebSocketClose {
    /// The client closed it, or the connection ended.
    Client,
    /// A message was larger than `websocket_max_message_size`.
    MessageTooLarge,
    /// The client did not read: its outgoing queue was full.
    SlowConsumer,
    /// The client broke the WebSocket protocol.
    ProtocolError,
}

impl WebSocketClose {
    /// Every reason, in declaration order: `reason as usize` indexes it.
    pub(super) const ALL: [WebSocketClose; 4] = [
        WebSocketClose::Client,
        WebSocketClose::MessageTooLarge,
        WebSocketClose::SlowConsumer,
        WebSocketClose::ProtocolError,
    ];

    /// The `reason` label value.
    pub(super) fn label(self) -> &'static str {
        match self {
            WebSocketClose::Client => "client",
            WebSocketClose::MessageTooLarge => "message_too_large",
            WebSocketClose::SlowConsumer => "slow_consumer",
            WebSocketClose::ProtocolError => "protocol_error",
        }
    }
}

/// Counts one WebSocket closed. Counted whether recording is on or not,
/// like reconnections: it is rare next to calls.
#[cfg(feature = "http")]
pub(crate) fn websocket_closed(reason: WebSocketClose) {
    use std::sync::atomic::Ordering;
    super::global().websocket_closed[reason as usize].fetch_add(1, Ordering::Relaxed);
}
