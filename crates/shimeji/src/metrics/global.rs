//! The process's metric state: the registry `/metrics` renders and every
//! series shimeji keeps, made on first use; and lock helpers that ignore
//! poisoning, so a panic elsewhere does not stop the counting.

use super::client::CallMetrics;
use super::collector::Collector;
use super::entrypoint::EntrypointMetrics;
use super::websocket::WebSocketClose;
use super::workers::WorkerStats;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};

/// The call series, by service then method: found with borrowed names, so
/// a lookup allocates nothing.
pub(super) type Calls =
    HashMap<Cow<'static, str>, HashMap<Cow<'static, str>, &'static CallMetrics>>;

/// Events published, by source then event type.
pub(super) type Dispatched = HashMap<&'static str, HashMap<Cow<'static, str>, Arc<AtomicU64>>>;

/// Every series of the process, and the registry that renders them.
pub(super) struct Global {
    pub(super) registry: Mutex<Registry>,
    pub(super) entrypoints: Mutex<Vec<Arc<EntrypointMetrics>>>,
    pub(super) calls: RwLock<Calls>,
    pub(super) dispatched: RwLock<Dispatched>,
    /// `(source, event_type)` of the events services declare they dispatch.
    pub(super) declared_events: Mutex<Vec<(&'static str, String)>>,
    pub(super) instances: Mutex<Vec<Weak<dyn WorkerStats>>>,
    pub(super) reconnects: Mutex<Vec<(&'static str, u64)>>,
    pub(super) dropped: Mutex<Vec<((&'static str, &'static str), u64)>>,
    /// By [`WebSocketClose`] reason.
    pub(super) websocket_closed: [AtomicU64; WebSocketClose::ALL.len()],
}

/// The process's state, made (with its registry) on first use.
pub(super) fn global() -> &'static Global {
    static GLOBAL: LazyLock<Global> = LazyLock::new(|| {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collector));
        Global {
            registry: Mutex::new(registry),
            entrypoints: Mutex::default(),
            calls: RwLock::default(),
            dispatched: RwLock::default(),
            declared_events: Mutex::default(),
            instances: Mutex::default(),
            reconnects: Mutex::default(),
            dropped: Mutex::default(),
            websocket_closed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    });
    &GLOBAL
}

/// Reads `l`, poisoned or not.
pub(super) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Writes `l`, poisoned or not.
pub(super) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

pub(super) use crate::sync::lock;
