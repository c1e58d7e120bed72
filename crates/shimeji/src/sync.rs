//! Locking shared state that a panic may have left behind.
//!
//! The crate's mutexes guard plain data (maps, counters, queues) that is
//! consistent between statements, so a panic on another thread while it
//! held a lock leaves nothing half-written: [`lock`] takes a poisoned lock
//! as it is instead of spreading the panic to every later caller.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
