//! Timer entrypoints: `#[timer(interval = "5s", eager = true)]`.
//!
//! Each timer of an instance is a task that runs its entrypoint every
//! interval until the instance stops. A run is a worker like any other
//! (context, `max_workers`, hooks, metrics). Runs never overlap: ticks
//! missed while a run goes on are skipped.

use std::sync::Arc;
use std::time::Duration;

use super::Container;
use crate::entrypoint::TimerSpec;
use crate::service::Service;
use crate::transport::HandlerError;

impl<S: Service> Container<S> {
    /// Starts the instance's timers; they end when it stops.
    pub(super) fn start_timers(self: &Arc<Self>) {
        for timer in S::TIMERS {
            tokio::spawn(self.clone().run_timer(timer));
        }
    }

    async fn run_timer(self: Arc<Self>, timer: &'static TimerSpec) {
        let period = Duration::from_millis(timer.interval_ms);
        let first = if timer.eager {
            tokio::time::Instant::now()
        } else {
            tokio::time::Instant::now() + period
        };
        let mut ticks = tokio::time::interval_at(first, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                _ = self.stopping.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let id = timer.id;
            match self.run(id, None, move |svc| svc.dispatch_timer(id)).await {
                Ok(()) => {}
                Err(HandlerError::Stopping) => return,
                Err(HandlerError::Failed(error)) => {
                    tracing::warn!(service = S::NAME, timer = timer.method, %error, "timer run failed");
                }
            }
        }
    }
}
