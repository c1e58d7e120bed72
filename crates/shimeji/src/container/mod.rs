//! The container: one running instance of a service.
//!
//! It sets up and starts the service's dependencies, hands the transport a
//! [`ServiceHandler`] for its entrypoints, bounds concurrency with
//! `max_workers`, gives every worker its [`WorkerContext`], turns panics into
//! errors, and on stop drains: it stops taking work, waits for the workers in
//! flight (up to the drain timeout, then cancels them), and stops the
//! dependencies.

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

mod limit;

use limit::WorkerLimit;

use crate::context::{self, WorkerContext};
use crate::dependency::{DependencyError, SetupContext};
use crate::entrypoint::{EntrypointId, EventHandlerSpec, TimerSpec};
use crate::error::RemoteError;
use crate::payload::Payload;
use crate::service::Service;
use crate::transport::{Binding, HandlerError, ServiceHandler, Serving, Transport, TransportError};

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

/// Why a service instance failed to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A dependency failed to set up or start.
    #[error("service `{service}`: {source}")]
    Dependency {
        /// The service.
        service: &'static str,
        /// The failure.
        #[source]
        source: DependencyError,
    },
    /// The transport refused to serve the service.
    #[error("service `{service}`: {source}")]
    Transport {
        /// The service.
        service: &'static str,
        /// The failure.
        #[source]
        source: TransportError,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The transport could not reach its broker.
    #[error("{0}")]
    Connect(String),
    /// A server the runner starts (the web server, the operations server)
    /// cannot listen on its address: it is taken, or not one of this host's.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address, as configured (`0.0.0.0:8000`).
        address: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The services' routes cannot be served together: two declare the
    /// same route, or a path is not valid.
    #[error("{0}")]
    Routes(String),
    /// The configuration asks for something this build cannot do.
    #[error("{0}")]
    Unsupported(String),
}

/// How long a stopping instance waits for the transport to settle the
/// work its workers finished.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Settings {
    pub max_workers: usize,
    pub parent_calls_tracked: usize,
    pub drain_timeout: Duration,
    pub observers: Arc<Observers>,
}

/// Where finished entrypoint runs are announced, for waiters.
pub(crate) struct Observers {
    pub(crate) finished: broadcast::Sender<Finished>,
    /// How many waiters listen: nothing is sent while none does.
    pub(crate) watching: AtomicUsize,
}

impl Observers {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Observers {
            finished: broadcast::channel(1024).0,
            watching: AtomicUsize::new(0),
        })
    }
}

pub(crate) struct Container<S: Service> {
    service: Arc<S>,
    instance_id: String,
    workers: WorkerLimit,
    accepting: AtomicBool,
    kill: CancellationToken,
    /// Cancelled when the instance stops: ends its timers.
    stopping: CancellationToken,
    worker_hooks: bool,
    settings: Settings,
    /// One per entrypoint while metrics are on; empty when they are off.
    metrics: Vec<Arc<crate::metrics::EntrypointMetrics>>,
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "the entrypoint panicked".to_string()
    }
}

impl<S: Service> Container<S> {
    pub(crate) fn new(service: Arc<S>, settings: Settings) -> Arc<Self> {
        let worker_hooks = service.dependencies().iter().any(|d| d.has_worker_hooks());
        let metrics = if crate::metrics::is_enabled() {
            Self::entrypoint_metrics()
        } else {
            Vec::new()
        };
        let container = Arc::new(Container {
            service,
            instance_id: uuid::Uuid::new_v4().simple().to_string(),
            workers: WorkerLimit::new(settings.max_workers),
            accepting: AtomicBool::new(true),
            kill: CancellationToken::new(),
            stopping: CancellationToken::new(),
            worker_hooks,
            settings,
            metrics,
        });
        if !container.metrics.is_empty() {
            let stats: Arc<dyn crate::metrics::WorkerStats> = container.clone();
            crate::metrics::watch_instance(Arc::downgrade(&stats));
        }
        container
    }

    /// The metric handles of every entrypoint, resolved once.
    fn entrypoint_metrics() -> Vec<Arc<crate::metrics::EntrypointMetrics>> {
        use crate::metrics::entrypoint;
        let errors = S::declared_errors;
        let mut all: Vec<_> = S::RPC_METHODS
            .iter()
            .map(|m| entrypoint(S::NAME, m, None, errors(m)))
            .collect();
        all.extend(S::EVENT_HANDLERS.iter().map(|h| {
            let event = Some((h.source, h.event_type));
            entrypoint(S::NAME, h.method, event, errors(h.method))
        }));
        all.extend(
            S::TIMERS
                .iter()
                .map(|t| entrypoint(S::NAME, t.method, None, errors(t.method))),
        );
        #[cfg(feature = "http")]
        all.extend(
            S::HTTP_ROUTES
                .iter()
                .map(|r| entrypoint(S::NAME, r.name, None, &[])),
        );
        crate::metrics::declare_events(S::NAME, S::describe().events);
        // Indexed by `EntrypointId`: the same order as `S::ENTRYPOINTS`.
        debug_assert_eq!(all.len(), S::ENTRYPOINTS.len());
        all
    }

    /// Sets up and starts the dependencies, then starts consuming.
    pub(crate) async fn start(
        self: &Arc<Self>,
        setup: &SetupContext,
        transport: &Arc<dyn Transport>,
    ) -> Result<Serving, StartError> {
        let dependency_error = |source| StartError::Dependency {
            service: S::NAME,
            source,
        };
        for dep in self.service.dependencies() {
            dep.setup(setup).await.map_err(dependency_error)?;
        }
        for dep in self.service.dependencies() {
            dep.start().await.map_err(dependency_error)?;
        }
        let binding = Binding {
            service: S::NAME,
            instance_id: self.instance_id.clone(),
            max_workers: self.settings.max_workers,
            has_rpc: !S::RPC_METHODS.is_empty(),
            event_handlers: S::EVENT_HANDLERS,
            handler: self.clone(),
        };
        let serving = transport
            .serve(binding)
            .await
            .map_err(|source| StartError::Transport {
                service: S::NAME,
                source,
            })?;
        for timer in S::TIMERS {
            tokio::spawn(self.clone().run_timer(timer));
        }
        tracing::info!(
            service = S::NAME,
            instance = %self.instance_id,
            transport = transport.name(),
            "service started"
        );
        Ok(serving)
    }

    /// Runs a timer entrypoint every interval until the instance stops. A run
    /// is a worker like any other (context, `max_workers`, hooks). Runs never
    /// overlap: ticks missed while a run goes on are skipped.
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

    /// Stops taking work, drains the workers in flight, stops the dependencies.
    pub(crate) async fn stop(&self, mut serving: Serving) {
        self.stopping.cancel();
        // No new work is routed here; work already routed is refused and
        // goes to another instance, or back to its queue.
        serving.stop().await;
        self.accepting.store(false, Ordering::Release);
        let all = self.settings.max_workers;
        let drained =
            tokio::time::timeout(self.settings.drain_timeout, self.workers.acquire_all(all))
                .await
                .is_ok();
        if !drained {
            tracing::warn!(
                service = S::NAME,
                "drain timeout ran out: cancelling the workers still running"
            );
            self.kill.cancel();
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.workers.acquire_all(all)).await;
        }
        self.workers.close();
        // The workers are done; let the transport finish with their work
        // (a reply confirmed, a request acked) before the connection goes.
        if tokio::time::timeout(SETTLE_TIMEOUT, serving.settle())
            .await
            .is_err()
        {
            tracing::warn!(
                service = S::NAME,
                "the transport did not settle the last work within {SETTLE_TIMEOUT:?}"
            );
        }
        for dep in self.service.dependencies() {
            dep.stop().await;
        }
        tracing::info!(service = S::NAME, instance = %self.instance_id, "service stopped");
    }

    /// Runs one worker: permit, context, per-call hooks, panic guard.
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
            self.settings.parent_calls_tracked,
        );
        let exporting = crate::trace::span_sink().map(|sink| (sink, std::time::SystemTime::now()));
        let measured = self.metrics.get(id.index()).map(|m| m.start());
        let deps = if self.worker_hooks {
            self.service.dependencies()
        } else {
            Vec::new()
        };
        for dep in &deps {
            dep.worker_setup(&ctx);
        }
        let guarded = AssertUnwindSafe(work(&self.service)).catch_unwind();
        // One span per entrypoint run, built only when a subscriber listens
        // at INFO: the hot path pays a relaxed load otherwise.
        let span = if tracing::dispatcher::has_been_set()
            && tracing::level_enabled!(tracing::Level::INFO)
        {
            let span = tracing::info_span!(
                target: "shimeji::entrypoint",
                "entrypoint",
                service = S::NAME,
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
        } else {
            tracing::Span::none()
        };
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
        if let Some(run) = measured {
            run.finish(result.as_ref().err().map(|e| e.exc_type.as_str()));
        }
        if let Some((sink, start)) = exporting {
            if let Some(span) = ctx.trace_parent() {
                sink.export(crate::trace::FinishedSpan {
                    service: S::NAME,
                    entrypoint,
                    call_id: ctx.call_id().unwrap_or_default(),
                    span,
                    parent_span_id: ctx.parent_span(),
                    start,
                    end: std::time::SystemTime::now(),
                    error: result
                        .as_ref()
                        .err()
                        .map(|e| (e.exc_type.clone(), e.value.clone())),
                });
            }
        }
        for dep in &deps {
            dep.worker_result(&ctx, result.as_ref().map(|_| ()));
            dep.worker_teardown(&ctx);
        }
        if self.settings.observers.watching.load(Ordering::Relaxed) > 0 {
            let _ = self.settings.observers.finished.send(Finished {
                service: S::NAME,
                entrypoint,
                call_id: ctx.call_id().unwrap_or_default(),
                result: result.as_ref().map(|_| ()).map_err(Clone::clone),
            });
        }
        result.map_err(HandlerError::Failed)
    }
}

impl<S: Service> crate::metrics::WorkerStats for Container<S> {
    fn service(&self) -> &'static str {
        S::NAME
    }

    fn workers(&self) -> (usize, usize, usize) {
        let max = self.settings.max_workers;
        let busy = max.saturating_sub(self.workers.free());
        (busy, max, self.workers.waiting())
    }
}

impl<S: Service> ServiceHandler for Container<S> {
    fn handle_rpc<'a>(
        &'a self,
        method: &'a str,
        payload: Payload,
        caller: Option<WorkerContext>,
    ) -> BoxFuture<'a, Result<Payload, HandlerError>> {
        Box::pin(async move {
            let Some(id) = S::rpc_entrypoint(method) else {
                return Err(HandlerError::Failed(RemoteError::method_not_found(method)));
            };
            self.run(id, caller, move |svc| svc.dispatch_rpc(id, payload))
                .await
        })
    }

    fn handle_event(
        &self,
        handler: &'static EventHandlerSpec,
        payload: Value,
        caller: Option<WorkerContext>,
    ) -> BoxFuture<'_, Result<(), HandlerError>> {
        let id = handler.id;
        Box::pin(self.run(id, caller, move |svc| svc.dispatch_event(id, payload)))
    }
}
