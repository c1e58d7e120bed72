//! The worker gauges' source: running service instances, each reporting
//! its workers until it is dropped.

use super::{global, lock};
use std::sync::Weak;

/// What a running service instance reports about its workers.
pub(crate) trait WorkerStats: Send + Sync {
    /// The service the instance runs.
    fn service(&self) -> &'static str;
    /// `(busy, max, waiting)`.
    fn workers(&self) -> (usize, usize, usize);
}

/// Reports a service instance's workers until it is dropped.
pub(crate) fn watch_instance(instance: Weak<dyn WorkerStats>) {
    let mut all = lock(&global().instances);
    all.retain(|w| w.strong_count() > 0);
    all.push(instance);
}
