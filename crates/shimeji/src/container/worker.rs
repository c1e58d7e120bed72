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
//!    ([`RunObserver`](super::observe::RunObserver)), from the first poll;
//! 5. **hooks**: the dependencies' `worker_setup` (only when a dependency
//!    has per-worker hooks);
//! 6. **guard**: each poll of the work runs in its context and span, a
//!    panic becomes a `Panicked` error, and a run that waits also listens
//!    for the kill signal of a drain that ran out of time;
//! 7. **finish**: `worker_result` and `worker_teardown`, then the observer
//!    records the outcome.
//!
//! Steps 1 to 3 run when the run is made, synchronously while a slot is
//! free; the rest is [`Worker`], a future written out by hand so that it
//! holds the work, its context and its observer once each, and nothing
//! else: it is what a transport boxes per call, so its size is what a call
//! copies. No step allocates or goes through a vtable unless it is on.

use pin_project_lite::pin_project;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::limit::Slot;
use super::observe::RunGuard;
use super::Container;
use crate::context::{self, WorkerContext};
use crate::dependency::Dependency;
use crate::entrypoint::EntrypointId;
use crate::error::RemoteError;
use crate::service::Service;
use crate::transport::HandlerError;

/// What a waiting run is: boxed, since only a run that finds every slot
/// taken waits.
type Waiting<'a, T> = Pin<Box<dyn Future<Output = Result<T, HandlerError>> + Send + 'a>>;

pin_project! {
    /// One run of an entrypoint, as [`Container::run`] makes it.
    #[project = RunProj]
    pub(crate) enum Run<'a, S: Service, F, T> {
        /// Refused: the instance is stopping.
        Refused { refused: bool },
        /// Admitted, with its slot.
        Working { #[pin] worker: Worker<'a, S, F> },
        /// Waiting for a slot (`max_workers` are running).
        Waiting { waiting: Waiting<'a, T> },
    }
}

pin_project! {
    /// An admitted run: steps 4 to 7 of the pipeline.
    pub(crate) struct Worker<'a, S: Service, F> {
        container: &'a Container<S>,
        id: EntrypointId,
        _slot: Slot<'a>,
        // Always `Some` between polls; in the thread's current-context
        // place during them.
        context: Option<WorkerContext>,
        started: Option<Started<'a>>,
        // The kill signal, listened for once the work has had to wait.
        kill: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
        finished: bool,
        #[pin]
        work: F,
    }
}

/// What the first poll of a run starts: its observation and its hooks.
struct Started<'a> {
    observed: RunGuard<'a>,
    span: tracing::Span,
    hooks: Vec<&'a dyn Dependency>,
}

/// Stands in for a worker's context should it be missing between polls,
/// which it never is.
static ROOT: LazyLock<WorkerContext> = LazyLock::new(WorkerContext::root);

impl<S: Service> Container<S> {
    /// Makes a run of entrypoint `id` for `caller`: `work` is the generated
    /// dispatch to the service's method.
    pub(crate) fn run<'a, T, F>(
        &'a self,
        id: EntrypointId,
        caller: Option<WorkerContext>,
        work: impl FnOnce(&'a S) -> F + Send + 'a,
    ) -> Run<'a, S, F, T>
    where
        F: Future<Output = Result<T, RemoteError>> + Send + 'a,
        T: Send + 'a,
    {
        if !self.accepting.load(Ordering::Acquire) {
            return Run::Refused { refused: true };
        }
        match self.workers.try_acquire() {
            Some(slot) => Run::Working {
                worker: self.worker(id, caller, slot, work(&self.service)),
            },
            None => Run::Waiting {
                waiting: Box::pin(async move {
                    let slot = self
                        .workers
                        .acquire()
                        .await
                        .map_err(|_| HandlerError::Stopping)?;
                    self.worker(id, caller, slot, work(&self.service)).await
                }),
            },
        }
    }

    fn worker<'a, F>(
        &'a self,
        id: EntrypointId,
        caller: Option<WorkerContext>,
        slot: Slot<'a>,
        work: F,
    ) -> Worker<'a, S, F> {
        let context = WorkerContext::for_worker(
            S::NAME,
            S::entrypoint_name(id),
            caller,
            self.limits.parent_calls_tracked,
        );
        Worker {
            container: self,
            id,
            _slot: slot,
            context: Some(context),
            started: None,
            kill: None,
            finished: false,
            work,
        }
    }
}

impl<'a, S, F, T> Future for Run<'a, S, F, T>
where
    S: Service,
    F: Future<Output = Result<T, RemoteError>> + Send + 'a,
{
    type Output = Result<T, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RunProj::Refused { .. } => Poll::Ready(Err(HandlerError::Stopping)),
            RunProj::Working { worker } => worker.poll(cx),
            RunProj::Waiting { waiting } => waiting.as_mut().poll(cx),
        }
    }
}

impl<'a, S, F, T> Future for Worker<'a, S, F>
where
    S: Service,
    F: Future<Output = Result<T, RemoteError>> + Send + 'a,
{
    type Output = Result<T, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let container: &'a Container<S> = this.container;
        if *this.finished {
            return Poll::Ready(Err(HandlerError::Failed(RemoteError::panicked(
                "a finished worker was polled again",
            ))));
        }
        // First poll: observe (where an in-process client's hand-over of
        // its start reading is taken) and run the setup hooks.
        let started = this.started.get_or_insert_with(|| {
            let ctx = this.context.as_ref().unwrap_or(&ROOT);
            let entrypoint = S::entrypoint_name(*this.id);
            let (observed, span) = container.observer.begin(this.id.index(), entrypoint, ctx);
            let hooks = if container.worker_hooks {
                container.service.dependencies()
            } else {
                Vec::new()
            };
            for dep in &hooks {
                dep.worker_setup(ctx);
            }
            Started {
                observed,
                span,
                hooks,
            }
        });
        let work = this.work;
        let polled = {
            let _entered = (!started.span.is_none()).then(|| started.span.enter());
            context::enter(this.context, || {
                std::panic::catch_unwind(AssertUnwindSafe(|| work.poll(cx)))
            })
        };
        let result = match polled {
            Ok(Poll::Ready(result)) => result,
            Ok(Poll::Pending) => {
                // Most workers finish on their first poll; only one that
                // waits needs to listen for the kill signal too.
                let kill = this
                    .kill
                    .get_or_insert_with(|| Box::pin(container.kill.clone().cancelled_owned()));
                if kill.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                Err(RemoteError::worker_killed(S::NAME))
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(
                    service = S::NAME,
                    entrypoint = S::entrypoint_name(*this.id),
                    panic = %message,
                    "entrypoint panicked"
                );
                Err(RemoteError::panicked(message))
            }
        };
        *this.finished = true;
        let ctx = this.context.as_ref().unwrap_or(&ROOT);
        if let Some(Started {
            observed, hooks, ..
        }) = this.started.take()
        {
            for dep in &hooks {
                dep.worker_result(ctx, result.as_ref().map(|_| ()));
                dep.worker_teardown(ctx);
            }
            observed.end(ctx, &result);
        }
        Poll::Ready(result.map_err(HandlerError::Failed))
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
