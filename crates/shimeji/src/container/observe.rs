//! What the framework itself watches of every run: the run's metrics, its
//! tracing span, its exported OTLP span and the entrypoint waiters.
//!
//! [`RunObserver::begin`] is called once a run has its worker context and
//! returns the span to run it in and a [`RunGuard`]; [`RunGuard::end`]
//! records the outcome everywhere. Each part costs nothing when it is off:
//! no metric handles when metrics are off, no span unless a subscriber
//! listens at INFO, no timestamps unless an OTLP exporter is installed, and
//! no message unless a waiter listens. Dispatch is static, so a run pays
//! for none of it through a vtable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::broadcast;

use crate::context::WorkerContext;
use crate::error::RemoteError;
use crate::metrics::{EntrypointMetrics, Run};
use crate::trace::{FinishedSpan, SpanSink};

/// An entrypoint run that finished, as [`entrypoint waiters`](crate::RunningServices::entrypoint_waiter) see it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The service.
    pub service: &'static str,
    /// The entrypoint (method name).
    pub entrypoint: &'static str,
    /// The worker's call id.
    pub call_id: String,
    /// `Ok` or the error the worker ended with.
    pub result: Result<(), RemoteError>,
}

/// Where finished entrypoint runs are announced, for waiters. One per
/// runner, shared by its instances.
pub(crate) struct Waiters {
    pub(crate) finished: broadcast::Sender<Finished>,
    /// How many waiters listen: nothing is sent while none does.
    pub(crate) watching: AtomicUsize,
}

impl Waiters {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Waiters {
            finished: broadcast::channel(1024).0,
            watching: AtomicUsize::new(0),
        })
    }
}

/// Observes the runs of one service instance.
pub(crate) struct RunObserver {
    service: &'static str,
    /// One per entrypoint, indexed by `EntrypointId`, while metrics are on;
    /// empty when they are off.
    metrics: Vec<Arc<EntrypointMetrics>>,
    waiters: Arc<Waiters>,
}

/// One run being observed; [`end`](RunGuard::end) it with its result.
pub(crate) struct RunGuard<'a> {
    observer: &'a RunObserver,
    entrypoint: &'static str,
    measured: Option<Run<'a>>,
    exporting: Option<(&'static dyn SpanSink, SystemTime)>,
}

impl RunObserver {
    pub(crate) fn new(
        service: &'static str,
        metrics: Vec<Arc<EntrypointMetrics>>,
        waiters: Arc<Waiters>,
    ) -> Self {
        RunObserver {
            service,
            metrics,
            waiters,
        }
    }

    /// Counts run `index`, recorded as ok, as failed with `exc_type`.
    #[cfg(feature = "http")]
    pub(crate) fn count_failure(&self, index: usize, exc_type: &str) {
        if let Some(metrics) = self.metrics.get(index) {
            metrics.failed(exc_type);
        }
    }

    /// Whether metrics are recorded for this instance.
    #[inline]
    pub(crate) fn is_measured(&self) -> bool {
        !self.metrics.is_empty()
    }

    /// Starts observing run `index` of `entrypoint` in worker context
    /// `ctx`: returns the span to run it in.
    ///
    /// Always inlined: `Container::run` is generic, so it is compiled in
    /// the crate that names the service, and this keeps the observer's
    /// code inside it, as it was before it had a file of its own (callgrind
    /// showed `begin` as a call of its own, about 70 instructions a run,
    /// with a plain `#[inline]`).
    #[inline(always)]
    pub(crate) fn begin(
        &self,
        index: usize,
        entrypoint: &'static str,
        ctx: &WorkerContext,
    ) -> (RunGuard<'_>, tracing::Span) {
        let exporting = crate::trace::span_sink().map(|sink| (sink, SystemTime::now()));
        let measured = self.metrics.get(index).map(|m| m.start());
        let guard = RunGuard {
            observer: self,
            entrypoint,
            measured,
            exporting,
        };
        (guard, self.span(entrypoint, ctx))
    }

    /// One span per entrypoint run, built only when a subscriber listens
    /// at INFO: the hot path pays a relaxed load otherwise.
    #[inline]
    fn span(&self, entrypoint: &'static str, ctx: &WorkerContext) -> tracing::Span {
        if !(tracing::dispatcher::has_been_set() && tracing::level_enabled!(tracing::Level::INFO)) {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            target: "shimeji::entrypoint",
            "entrypoint",
            service = self.service,
            entrypoint,
            call_id = tracing::field::Empty,
            parent_call_id = tracing::field::Empty,
        );
        if !span.is_disabled() {
            if let Some(id) = ctx.call_id() {
                span.record("call_id", id.as_str());
            }
            if let Some(parent) = ctx.parent_call_id() {
                span.record("parent_call_id", parent.as_str());
            }
        }
        span
    }
}

impl RunGuard<'_> {
    /// Records the run's outcome: its metrics, its OTLP span, and the
    /// waiters that listen.
    #[inline(always)]
    pub(crate) fn end<T>(self, ctx: &WorkerContext, result: &Result<T, RemoteError>) {
        let RunGuard {
            observer,
            entrypoint,
            measured,
            exporting,
        } = self;
        let error = result.as_ref().err();
        if let Some(run) = measured {
            run.finish(error.map(|e| e.exc_type.as_str()));
        }
        if let Some((sink, start)) = exporting {
            if let Some(span) = ctx.trace_parent() {
                sink.export(FinishedSpan {
                    service: observer.service,
                    entrypoint,
                    call_id: ctx.call_id().unwrap_or_default(),
                    span,
                    parent_span_id: ctx.parent_span(),
                    start,
                    end: SystemTime::now(),
                    error: error.map(|e| (e.exc_type.clone(), e.value.clone())),
                });
            }
        }
        let waiters = &observer.waiters;
        if waiters.watching.load(Ordering::Relaxed) > 0 {
            let _ = waiters.finished.send(Finished {
                service: observer.service,
                entrypoint,
                call_id: ctx.call_id().unwrap_or_default(),
                result: result.as_ref().map(|_| ()).map_err(Clone::clone),
            });
        }
    }
}
