//! Prometheus metrics: every service is measured with no code of its own.
//!
//! Recording is off until the process turns it on: by setting
//! `METRICS_ADDRESS` in the configuration (the runner then serves
//! `/metrics`, `/health/live` and `/health/ready` there), or by calling
//! [`enable`] and serving [`render`] yourself. Services started while it is
//! on are measured, on handles each service (and each method of a
//! generated client) resolves once. A run costs two readings of the CPU's
//! time stamp counter and one histogram observation: two plain stores into
//! the running thread's own shard. An in-process call served within its
//! caller's poll is observed once for both the entrypoint and the client
//! series (see `handover` in the source).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `shimeji_entrypoint_calls_total` | service, entrypoint, outcome | runs by outcome: `ok`, or the error's type |
//! | `shimeji_entrypoint_duration_seconds` | service, entrypoint | run time histogram |
//! | `shimeji_entrypoint_in_flight` | service, entrypoint | runs in progress now, all instances |
//! | `shimeji_workers_busy` | service | workers running now, all instances |
//! | `shimeji_workers_max` | service | `max_workers`, all instances |
//! | `shimeji_workers_waiting` | service | work waiting for a free worker (saturation) |
//! | `shimeji_client_calls_total` | service, method, outcome | calls made by clients in this process |
//! | `shimeji_client_call_duration_seconds` | service, method | call time, as the caller saw it |
//! | `shimeji_events_dispatched_total` | source, event_type | events published |
//! | `shimeji_events_handled_total` | service, handler, source, event_type, outcome | event handler runs |
//! | `shimeji_transport_reconnects_total` | transport | reconnections after a broker loss |
//! | `shimeji_transport_messages_dropped_total` | transport, reason | messages given up on: `malformed` (nowhere to answer), `reply_unconfirmed` (its reply was never confirmed) |
//! | `shimeji_websocket_closed_total` | reason | WebSockets closed: `client`, `message_too_large`, `slow_consumer`, `protocol_error` |
//!
//! Label values come only from what the code declares, never from the
//! network, so the number of series stays bounded whatever peers send:
//! services, entrypoints and event handlers as `#[service]` declares them;
//! `outcome` is `ok`, one of shimeji's own error types (`MethodNotFound`,
//! `Timeout`, `Cancelled`, …), an error type the entrypoint declares (its
//! error's `#[derive(Exception)]` names), or else `other` (a remote error
//! passed on, say). A client's `method` is its own when the name is
//! written in the code (generated clients, `call_typed`) or names an
//! entrypoint running in this process; a name made at run time that does
//! not (an unknown method sent over `/ws`, say) counts as method `other`.
//! An event type made at run time is its own only when its service
//! declares it (`#[service(events = [...])]`).
//!
//! Saturation is per service, as `max_workers` is: `shimeji_workers_busy`
//! against `shimeji_workers_max`, and `shimeji_workers_waiting` above zero
//! when work queues for a worker. A run dropped before it finished (an
//! in-process caller that timed out, say) counts with outcome `Cancelled`.
//!
//! Your own metrics join the same scrape through [`registry`]:
//!
//! ```
//! use prometheus_client::metrics::counter::Counter;
//!
//! let orders = Counter::<u64>::default();
//! shimeji::metrics::registry()
//!     .lock()
//!     .unwrap()
//!     .register("shop_orders", "Orders placed", orders.clone());
//! orders.inc();
//! assert!(shimeji::metrics::render().contains("shop_orders_total 1"));
//! ```

// The parts, one job each: the clock (`clock`), the sharded histogram
// (`histogram`), error counts by declared type (`errors`), the series of
// entrypoints (`entrypoint`), of client calls (`client`) and of events
// (`events`), the hand-over that measures an in-process call once for
// both its client and its entrypoint (`handover`), the worker gauges'
// source (`workers`), transport and WebSocket counters (`transport`,
// `websocket`), the process's state (`global`) and the collector that
// renders it all on a scrape (`collector`).

mod client;
mod clock;
mod collector;
mod entrypoint;
mod errors;
mod events;
mod global;
pub(crate) mod handover;
mod histogram;
#[cfg(feature = "amqp")]
mod transport;
mod websocket;
mod workers;

use global::{global, lock, read, write};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub use prometheus_client;

pub(crate) use client::{call, CallMetrics};
pub(crate) use clock::Instant;
pub(crate) use entrypoint::{entrypoint, EntrypointMetrics, Run};
#[cfg(feature = "http")]
pub(crate) use errors::HTTP_SERVER_ERROR;
pub(crate) use events::{declare_events, event_dispatched};
#[cfg(feature = "amqp")]
pub(crate) use transport::{dropped, reconnected};
#[cfg(feature = "http")]
pub(crate) use websocket::{websocket_closed, WebSocketClose};
pub(crate) use workers::{watch_instance, WorkerStats};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns recording on for this process. Services started from now on are
/// measured; clients and event dispatchers record at once.
pub fn enable() {
    // The clock calibrates on first use: not on a worker's time.
    let _ = Instant::now();
    ENABLED.store(true, Ordering::Relaxed);
}

/// Turns recording off for this process: clients, event dispatchers and
/// services started from now on record nothing. Services already started
/// with recording on go on recording.
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// Whether recording is on.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The registry `/metrics` renders. Register your own metrics in it.
pub fn registry() -> &'static Mutex<Registry> {
    &global().registry
}

/// The metrics in the OpenMetrics text format, as `/metrics` serves them.
pub fn render() -> String {
    let mut text = String::new();
    let registry = lock(registry());
    // Writing to a String cannot fail; a collector that fails is a bug
    // that must not take the endpoint down.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::error!(%error, "cannot encode the metrics");
    }
    text
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
