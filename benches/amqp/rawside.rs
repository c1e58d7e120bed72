//! The raw contenders of one round: servers, clients and the event
//! publisher, opened at the start of the round and closed at its end, so
//! that a broker restart by someone else costs one round, not the run.

use amqprs::connection::Connection;
use serde_json::json;
use std::sync::Arc;

use crate::measure::{check_echo, Call};
use crate::raw::{self, ServerSettings};
use crate::{naive, wire};

/// The naive raw server's prefetch, as it always had.
pub const NAIVE_PREFETCH: u16 = 64;

/// The raw contenders, connected.
pub struct RawSide {
    connections: Vec<Connection>,
    /// (a), one call per serving setting.
    pub calls: Vec<Call>,
    /// The naive raw client calling the naive server.
    pub naive: Call,
    /// Events, published as shimeji publishes them.
    pub events: Arc<raw::Events>,
}

impl RawSide {
    /// Opens a raw server `rawecho{tag}` per setting, the naive server, and
    /// their clients.
    pub async fn open(settings: &[ServerSettings]) -> Result<Self, String> {
        let mut connections = Vec::new();
        for s in settings {
            connections.push(raw::serve(&format!("rawecho{}", s.tag()), *s).await?);
        }
        connections.push(naive::serve("naiveecho", NAIVE_PREFETCH).await?);
        let raw_conn = wire::open("bench raw client").await?;
        let raw_client = raw::Client::connect(&raw_conn).await?;
        let events = Arc::new(raw::Events::open(&raw_conn, "benchecho").await?);
        let naive_conn = wire::open("bench naive client").await?;
        let naive_client = naive::Client::connect(&naive_conn).await?;
        connections.extend([raw_conn, naive_conn]);
        let calls = settings
            .iter()
            .map(|s| {
                let client = raw_client.clone();
                let service = Arc::<str>::from(format!("rawecho{}", s.tag()));
                let call: Call = Arc::new(move || {
                    let (c, s) = (client.clone(), service.clone());
                    Box::pin(async move { check_echo(c.echo(&s, "Ada").await?) })
                });
                call
            })
            .collect();
        let naive: Call = Arc::new(move || {
            let c = naive_client.clone();
            Box::pin(async move { check_echo(c.echo("naiveecho", "Ada").await?) })
        });
        Ok(RawSide {
            connections,
            calls,
            naive,
            events,
        })
    }

    /// Publishes one event and waits for its confirm.
    pub async fn publish_event(&self) -> Result<(), String> {
        self.events.publish("tick", json!({"n": 1})).await
    }

    /// Closes every connection.
    pub async fn close(self) {
        drop((self.calls, self.naive, self.events));
        for c in self.connections {
            let _ = c.close().await;
        }
    }
}
