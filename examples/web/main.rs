//! Facing HTTP clients and browsers: HTTP entrypoints, a WebSocket hub with
//! server push, and a timer.
//!
//! ```text
//! cargo run --example web
//! curl localhost:8000/notes/1
//! curl -X POST localhost:8000/notes -H 'content-type: application/json' -d '{"text": "buy milk"}'
//! curl -i localhost:8000/notes/99          # 404 with a JSON error body
//! ```
//!
//! A browser (or `websocat ws://localhost:8000/ws`) can send
//! `{"method": "notes.watch", "data": {}, "correlation_id": 1}` and then
//! receives a `note_added` event for every new note, and a `tick` every 10 s.
//! Set `WEB_SERVER_ADDRESS` to listen elsewhere. With `REGISTRY` set (and
//! shimeji's feature `etcd`), it registers in the service registry once
//! ready: `examples/platform` runs two of it behind `shimeji gateway` and
//! upgrades them.

use serde::{Deserialize, Serialize};
use shimeji::http::{Json, Path, Status, WebSocketHub};
use shimeji::prelude::*;
use std::sync::Mutex;

/// A note.
#[derive(Clone, Serialize, Deserialize)]
struct Note {
    id: u64,
    text: String,
}

/// What a client sends to add a note.
#[derive(Deserialize)]
struct NewNote {
    text: String,
}

/// The errors the notes API expects; each knows its HTTP status.
#[derive(Debug, thiserror::Error, Exception)]
enum NoteError {
    /// No note with that id.
    #[error("no note {0}")]
    #[exception(status = 404)]
    NotFound(u64),
    /// Empty text.
    #[error("a note needs some text")]
    Empty,
}

/// Notes, over HTTP and WebSocket.
#[derive(Default, Dependencies)]
struct Notes {
    hub: WebSocketHub,
    notes: Mutex<Vec<Note>>,
    /// What `GET /about` says: `SERVICE_VERSION`, the version the registry
    /// lists this instance under.
    version: String,
}

#[service(name = "notes", websocket)]
impl Notes {
    /// `GET /notes/{id}`.
    #[http(GET, "/notes/{id}")]
    async fn get(&self, Path(id): Path<u64>) -> Result<Note, NoteError> {
        let notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        notes
            .iter()
            .find(|n| n.id == id)
            .cloned()
            .ok_or(NoteError::NotFound(id))
    }

    /// `POST /notes`: adds a note and pushes it to every watcher.
    #[http(POST, "/notes")]
    async fn add(&self, Json(new): Json<NewNote>) -> Result<(Status, Json<Note>), NoteError> {
        if new.text.trim().is_empty() {
            return Err(NoteError::Empty);
        }
        let note = {
            let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
            let note = Note {
                id: notes.len() as u64 + 1,
                text: new.text,
            };
            notes.push(note.clone());
            note
        };
        self.hub.broadcast("notes", "note_added", &note);
        Ok((Status::CREATED, Json(note)))
    }

    /// `GET /about`: which version and process answered — behind a gateway,
    /// watch it change during a rolling upgrade (`examples/platform`).
    #[http(GET, "/about")]
    async fn about(&self) -> Json<serde_json::Value> {
        Json(serde_json::json!({
            "service": "notes",
            "version": self.version,
            "pid": std::process::id(),
        }))
    }

    /// Over the WebSocket: subscribes the calling socket to new notes.
    #[rpc]
    async fn watch(&self) -> bool {
        let socket = shimeji::context::current()
            .and_then(|c| {
                c.data("socket_id")
                    .and_then(|v| v.as_str())
                    .map(String::from)
            })
            .unwrap_or_default();
        self.hub.subscribe(&socket, "notes")
    }

    /// Every 10 s, tells the watchers how many notes there are.
    #[timer(interval = "10s")]
    async fn tick(&self) {
        let count = self.notes.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.hub
            .broadcast("notes", "tick", serde_json::json!({ "notes": count }));
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let notes = Notes {
        version: std::env::var("SERVICE_VERSION").unwrap_or_else(|_| "0.1.0".into()),
        ..Notes::default()
    };
    notes
        .notes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Note {
            id: 1,
            text: "try shimeji".into(),
        });
    let running = ServiceRunner::new().service(notes).start().await?;
    if let Some(address) = running.web_address() {
        println!("notes listening on http://{address} (Ctrl-C to stop)");
    }
    running.run_until_signal().await;
    Ok(())
}
