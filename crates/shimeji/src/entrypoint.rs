//! What an entrypoint is, as the container and the transports see it.
//!
//! `#[service]` declares each entrypoint of a service once, in a fixed
//! order (RPC methods, then event handlers, then timers, then HTTP routes),
//! and gives it an [`EntrypointId`]: its position in that order. The id is
//! resolved once where work arrives (a transport hands over an event
//! handler's spec, which carries its id; an RPC method name is resolved
//! once by the container) and then travels with the run: the container
//! finds the entrypoint's metric handles by it, and the generated dispatch
//! `match`es on it. No name is looked up twice.
//!
//! This module is vocabulary: it imports nothing else from the crate.
//!
//! ```
//! use shimeji::entrypoint::{EntrypointId, EventHandlerSpec, HandlerType};
//!
//! let spec = EventHandlerSpec {
//!     id: EntrypointId::new(2),
//!     method: "on_greeted",
//!     source: "greeter",
//!     event_type: "greeted",
//!     handler_type: HandlerType::Broadcast,
//!     reliable_delivery: false,
//! };
//! assert_eq!(spec.id.index(), 2);
//! assert_eq!(spec.handler_type.as_str(), "broadcast");
//! ```

use serde::{Deserialize, Serialize};

/// An entrypoint of a service: its position in the order `#[service]`
/// declares them (RPC methods, event handlers, timers, HTTP routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntrypointId(u16);

impl EntrypointId {
    /// The entrypoint at `index` in the service's declaration order.
    #[inline]
    pub const fn new(index: u16) -> Self {
        EntrypointId(index)
    }

    /// Its position in the service's declaration order.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Which instances get an event (Nameko's `handler_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HandlerType {
    /// One instance of each handling service gets the event (the default).
    #[default]
    ServicePool,
    /// One instance in the whole cluster gets the event.
    Singleton,
    /// Every instance gets the event.
    Broadcast,
}

impl HandlerType {
    /// Nameko's name for the handler type.
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerType::ServicePool => "service_pool",
            HandlerType::Singleton => "singleton",
            HandlerType::Broadcast => "broadcast",
        }
    }
}

/// An event handler entrypoint, as the container and transports need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHandlerSpec {
    /// The entrypoint.
    pub id: EntrypointId,
    /// The method that handles the event.
    pub method: &'static str,
    /// The service that dispatches the event.
    pub source: &'static str,
    /// The event type.
    pub event_type: &'static str,
    /// Which instances get the event.
    pub handler_type: HandlerType,
    /// Keep undelivered events while no instance is running (default true).
    pub reliable_delivery: bool,
}

impl EventHandlerSpec {
    /// Whether the handler's queue goes away with its last consumer: a
    /// broadcast queue belongs to one instance, and a handler without
    /// reliable delivery keeps no events while no instance runs.
    pub fn queue_auto_delete(&self) -> bool {
        self.handler_type == HandlerType::Broadcast || !self.reliable_delivery
    }
}

/// A timer entrypoint: `#[timer(interval = "5s", eager = true)]`.
///
/// Runs never overlap: a run still going when the next tick comes makes the
/// timer skip that tick, and the next run starts on the following one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerSpec {
    /// The entrypoint.
    pub id: EntrypointId,
    /// The method to run.
    pub method: &'static str,
    /// Time between runs, in milliseconds.
    pub interval_ms: u64,
    /// Run once at start, without waiting for the first interval.
    pub eager: bool,
}
