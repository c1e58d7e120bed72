//! A WebSocket client of shimeji's hub (`/ws`), for the HTTP tests.

use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{Error, Message};

/// A client's WebSocket connection.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the hub at `url` (`ws://…/ws`) and takes its first frame,
/// which must be the `connected` event.
pub async fn connect_ws(url: &str) -> Socket {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["event"], "connected");
    ws
}

/// The next text frame, parsed as JSON; other frames are skipped. Fails the
/// test when none comes within 10 s or the socket closes.
pub async fn next_json(ws: &mut (impl StreamExt<Item = Result<Message, Error>> + Unpin)) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("a frame");
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).expect("a JSON frame");
        }
    }
}
