//! An entrypoint's series: its handles, resolved once when its service
//! starts, and one [`Run`] per call from start to outcome.

use super::clock::Instant;
use super::errors::{Errors, CANCELLED};
use super::handover;
use super::histogram::{Histogram, Snapshot};
use super::{global, lock};
use std::sync::Arc;

/// The handles of one entrypoint, resolved when its service starts.
pub(crate) struct EntrypointMetrics {
    pub(super) service: &'static str,
    pub(super) entrypoint: &'static str,
    /// `(source, event_type)` for an event handler.
    pub(super) event: Option<(&'static str, &'static str)>,
    /// The error types the entrypoint declares.
    pub(super) declared: &'static [&'static str],
    duration: Histogram,
    /// Runs served inline for a measuring client of this process (see
    /// [`handover`]): observed once, they count in this entrypoint's series
    /// and in the client series of `service.entrypoint` alike.
    pub(super) inline: Histogram,
    pub(super) errors: Errors,
}

/// One run of an entrypoint, from start to outcome.
pub(crate) struct Run<'a> {
    metrics: &'a EntrypointMetrics,
    started: Instant,
    /// The client call that handed its start over, if one did.
    caller: Option<handover::Token>,
}

impl EntrypointMetrics {
    /// Starts a run: counted in flight until it is finished or dropped.
    pub(crate) fn start(&self) -> Run<'_> {
        self.duration.begin();
        // Hand-over protocol, entrypoint side (see `metrics::handover`): a
        // client polling this call on this thread offers its start reading;
        // taking it makes the run start where the client's call started.
        let (started, caller) = match handover::take_start() {
            Some((started, token)) => (started, Some(token)),
            None => (Instant::now(), None),
        };
        Run {
            metrics: self,
            started,
            caller,
        }
    }

    /// Counts a run already recorded as ok as failed with `exc_type`
    /// instead: an HTTP entrypoint whose response is a 5xx.
    #[cfg(feature = "http")]
    pub(crate) fn failed(&self, exc_type: &str) {
        self.errors.add(exc_type);
    }

    /// Both histograms summed: every run of this entrypoint.
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot::of(&[&self.duration, &self.inline])
    }
}

impl Run<'_> {
    /// Records the run's time and outcome: `None` for ok, else the error type.
    pub(crate) fn finish(self, error: Option<&str>) {
        self.record(error);
        // Recorded: nothing left for `drop` (a `Run` owns nothing).
        std::mem::forget(self);
    }

    fn record(&self, error: Option<&str>) {
        let m = self.metrics;
        let nanos = Instant::now().nanos_since(self.started);
        match self.caller {
            // Hand-over protocol (see `metrics::handover`): still inside the
            // caller's first poll, the caller counts the call through this
            // observation instead of making its own.
            Some(caller) if handover::recorded_for(caller) => m.inline.observe(nanos),
            _ => m.duration.observe(nanos),
        }
        if let Some(exc_type) = error {
            m.errors.add(exc_type);
        }
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.record(Some(CANCELLED));
    }
}

/// The handles of `service.entrypoint`, shared by every instance of the
/// service. `errors` are the error types the entrypoint declares.
pub(crate) fn entrypoint(
    service: &'static str,
    entrypoint: &'static str,
    event: Option<(&'static str, &'static str)>,
    errors: &'static [&'static str],
) -> Arc<EntrypointMetrics> {
    let mut all = lock(&global().entrypoints);
    if let Some(found) = all
        .iter()
        .find(|m| m.service == service && m.entrypoint == entrypoint)
    {
        return found.clone();
    }
    let created = Arc::new(EntrypointMetrics {
        service,
        entrypoint,
        event,
        declared: errors,
        duration: Histogram::new(),
        inline: Histogram::new(),
        errors: Errors::new(errors),
    });
    all.push(created.clone());
    created
}
