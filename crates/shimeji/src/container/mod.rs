//! The container: one running instance of a service.
//!
//! It sets up and starts the service's dependencies, hands the transport a
//! [`ServiceHandler`] for its entrypoints, bounds concurrency with
//! `max_workers`, gives every worker its [`WorkerContext`], turns panics into
//! errors, and on stop drains: it stops taking work, waits for the workers in
//! flight (up to the drain timeout, then cancels them), and stops the
//! dependencies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod handler;
mod limit;
mod observe;
mod timer;
mod worker;

#[cfg(feature = "http")]
pub(crate) use worker::panic_message;

use limit::WorkerLimit;
pub use observe::Finished;
use observe::RunObserver;
pub(crate) use observe::Waiters;

use crate::dependency::{DependencyError, SetupContext};
use crate::service::Service;
use crate::transport::{Endpoint, Serving, Transport, TransportError};

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

/// What bounds one service instance, from the runner's configuration.
pub(crate) struct Limits {
    /// Workers running at once (`max_workers`).
    pub max_workers: usize,
    /// Calls kept in a worker's call id stack (`parent_calls_tracked`).
    pub parent_calls_tracked: usize,
    /// How long a stopping instance waits for its workers (`drain_timeout`).
    pub drain_timeout: Duration,
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
    limits: Limits,
    /// Metrics, spans, OTLP and waiters of every run.
    observer: RunObserver,
}

impl<S: Service> Container<S> {
    /// An instance of `service` within `limits`, announcing its finished
    /// runs to `waiters`.
    pub(crate) fn new(service: Arc<S>, limits: Limits, waiters: Arc<Waiters>) -> Arc<Self> {
        let worker_hooks = service.dependencies().iter().any(|d| d.has_worker_hooks());
        let metrics = if crate::metrics::is_enabled() {
            Self::entrypoint_metrics()
        } else {
            Vec::new()
        };
        let observer = RunObserver::new(S::NAME, metrics, waiters);
        let container = Arc::new(Container {
            service,
            instance_id: uuid::Uuid::new_v4().simple().to_string(),
            workers: WorkerLimit::new(limits.max_workers),
            accepting: AtomicBool::new(true),
            kill: CancellationToken::new(),
            stopping: CancellationToken::new(),
            worker_hooks,
            limits,
            observer,
        });
        if container.observer.is_measured() {
            let stats: Arc<dyn crate::metrics::WorkerStats> = container.clone();
            crate::metrics::watch_instance(Arc::downgrade(&stats));
        }
        container
    }

    /// Counts a run of entrypoint `id` that ended ok as failed with
    /// `exc_type` (an HTTP entrypoint that answered a 5xx).
    #[cfg(feature = "http")]
    pub(crate) fn count_failure(&self, id: crate::entrypoint::EntrypointId, exc_type: &str) {
        self.observer.count_failure(id.index(), exc_type);
    }

    /// The metric handles of every entrypoint, resolved once.
    fn entrypoint_metrics() -> Vec<Arc<crate::metrics::EntrypointMetrics>> {
        use crate::metrics::entrypoint;
        let errors = S::declared_errors;
        // Indexed by `EntrypointId`: the order of `S::ENTRYPOINTS` (RPC
        // methods, event handlers, timers, HTTP routes).
        let events = S::RPC_METHODS.len()..S::RPC_METHODS.len() + S::EVENT_HANDLERS.len();
        let all = S::ENTRYPOINTS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let event = events
                    .contains(&i)
                    .then(|| &S::EVENT_HANDLERS[i - events.start])
                    .map(|h| (h.source, h.event_type));
                entrypoint(S::NAME, name, event, errors(name))
            })
            .collect();
        crate::metrics::declare_events(S::NAME, S::describe().events);
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
        let endpoint = Endpoint {
            service: S::NAME,
            instance_id: self.instance_id.clone(),
            max_workers: self.limits.max_workers,
            has_rpc: !S::RPC_METHODS.is_empty(),
            event_handlers: S::EVENT_HANDLERS,
            handler: self.clone(),
        };
        let serving = transport
            .serve(endpoint)
            .await
            .map_err(|source| StartError::Transport {
                service: S::NAME,
                source,
            })?;
        self.start_timers();
        tracing::info!(
            service = S::NAME,
            instance = %self.instance_id,
            transport = transport.name(),
            "service started"
        );
        Ok(serving)
    }

    /// Resolves once every dependency is ready.
    pub(crate) async fn ready(&self) {
        for dep in self.service.dependencies() {
            dep.ready().await;
        }
    }

    /// Stops taking work, drains the workers in flight, stops the dependencies.
    pub(crate) async fn stop(&self, mut serving: Serving) {
        self.stopping.cancel();
        // Long-lived work (long polls, sockets) would hold the drain open
        // until its timeout: the dependencies that hold it end it first.
        for dep in self.service.dependencies() {
            dep.draining().await;
        }
        // No new work is routed here; work already routed is refused and
        // goes to another instance, or back to its queue.
        serving.stop().await;
        self.accepting.store(false, Ordering::Release);
        let all = self.limits.max_workers;
        let drained =
            tokio::time::timeout(self.limits.drain_timeout, self.workers.acquire_all(all))
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
}

impl<S: Service> crate::metrics::WorkerStats for Container<S> {
    fn service(&self) -> &'static str {
        S::NAME
    }

    fn workers(&self) -> (usize, usize, usize) {
        let max = self.limits.max_workers;
        let busy = max.saturating_sub(self.workers.free());
        (busy, max, self.workers.waiting())
    }
}
