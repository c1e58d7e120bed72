//! One worker: one run of an entrypoint, from admission to result.
//!
//! The pipeline, in order:
//!
//! 1. **admit**: a stopping instance refuses ([`HandlerError::Stopping`]),
//!    so the transport passes the work on and nothing is lost;
//! 2. **permit**: one of `max_workers` slots ([`WorkerLimit`](super::limit::WorkerLimit));
//! 3. **context**: the run's [`WorkerContext`] (call id, caller's stack,
//!    trace parent, context data);
//! 4. **observe**: metrics, span, OTLP span and waiters
//!    ([`RunObserver`](super::observe::RunObserver));
//! 5. **hooks**: the dependencies' `worker_setup` (only when a dependency
//!    has per-worker hooks);
//! 6. **guard**: the work runs in its context and span, a panic becomes a
//!    `Panicked` error, and a run that waits also listens for the kill
//!    signal of a drain that ran out of time;
//! 7. **finish**: `worker_result` and `worker_teardown`, then the observer
//!    records the outcome.
//!
//! Every step is a plain call on the container: no boxing, no dynamic
//! dispatch, so a call served in process stays well under a microsecond.

use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;

use super::Container;
use crate::context::{self, WorkerContext};
use crate::entrypoint::EntrypointId;
use crate::error::RemoteError;
use crate::service::Service;
use crate::transport::HandlerError;

impl<S: Service> Container<S> {
    /// Runs one worker of entrypoint `id` for `caller`: `work` is the
    /// generated dispatch to the service's method.
    pub(crate) async fn run<'a, T, F>(
        &'a self,
        id: EntrypointId,
        caller: Option<WorkerContext>,
        work: impl FnOnce(&'a S) -> F,
    ) -> Result<T, HandlerError>
    where
        F: Future<Output = Result<T, RemoteError>> + Send + 'a,
    {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(HandlerError::Stopping);
        }
        let _slot = self
            .workers
            .acquire()
            .await
            .map_err(|_| HandlerError::Stopping)?;
        let entrypoint = S::entrypoint_name(id);
        let ctx = WorkerContext::for_worker(
            S::NAME,
            entrypoint,
            caller,
            self.limits.parent_calls_tracked,
        );
        let (observed, span) = self.observer.begin(id.index(), entrypoint, &ctx);
        let deps = if self.worker_hooks {
            self.service.dependencies()
        } else {
            Vec::new()
        };
        for dep in &deps {
            dep.worker_setup(&ctx);
        }
        let guarded = AssertUnwindSafe(work(&self.service)).catch_unwind();
        let mut worker = std::pin::pin!(tracing::Instrument::instrument(
            context::scope(ctx.clone(), guarded),
            span
        ));
        // Most workers finish on their first poll; only one that waits needs
        // to listen for the kill signal too.
        let outcome = match futures::poll!(worker.as_mut()) {
            std::task::Poll::Ready(outcome) => Some(outcome),
            std::task::Poll::Pending => tokio::select! {
                biased;
                outcome = worker => Some(outcome),
                _ = self.kill.cancelled() => None,
            },
        };
        let result = match outcome {
            Some(Ok(result)) => result,
            Some(Err(panic)) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(service = S::NAME, entrypoint, panic = %message, "entrypoint panicked");
                Err(RemoteError::panicked(message))
            }
            None => Err(RemoteError::worker_killed(S::NAME)),
        };
        for dep in &deps {
            dep.worker_result(&ctx, result.as_ref().map(|_| ()));
            dep.worker_teardown(&ctx);
        }
        observed.end(&ctx, &result);
        result.map_err(HandlerError::Failed)
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "the entrypoint panicked".to_string()
    }
}
