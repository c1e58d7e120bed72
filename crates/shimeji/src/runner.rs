//! The runner: starts a set of services, hands out clients, stops them.
//!
//! ```no_run
//! use shimeji::prelude::*;
//!
//! #[derive(Default)]
//! struct Greeter;
//!
//! #[service(name = "greeter")]
//! impl Greeter {
//!     #[rpc]
//!     async fn hello(&self, name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), StartError> {
//!     // Serve until SIGTERM or Ctrl-C, then drain and stop.
//!     ServiceRunner::new().service(Greeter).run().await
//! }
//! ```
//!
//! Several instances of one service: add it several times. Every instance
//! takes its share of RPC calls and events.

use futures::future::BoxFuture;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

use crate::client::{Client, ServiceClient};
use crate::config::Config;
use crate::container::{Container, Finished, Observers, Settings, StartError};
use crate::dependency::SetupContext;
use crate::health::{Health, Stage};
use crate::service::Service;
use crate::transport::{MemoryTransport, Serving, Transport};

type Starter = Box<
    dyn FnOnce(
            Runtime,
        ) -> BoxFuture<
            'static,
            Result<Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>, StartError>,
        > + Send,
>;

#[derive(Clone)]
struct Runtime {
    config: Arc<Config>,
    transport: Arc<dyn Transport>,
    observers: Arc<Observers>,
    health: Health,
    #[cfg(feature = "http")]
    web: Arc<std::sync::Mutex<crate::http::server::WebApp>>,
    #[cfg(feature = "http")]
    hub: Arc<crate::http::hub_registry::Hub>,
}

/// Collects services, then starts them on one transport.
pub struct ServiceRunner {
    config: Config,
    transport: Option<Arc<dyn Transport>>,
    starters: Vec<Starter>,
    names: Vec<&'static str>,
}

impl Default for ServiceRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceRunner {
    /// A runner configured from the environment ([`Config::from_env`]), on
    /// the embedded memory transport.
    pub fn new() -> Self {
        Self::with_config(Config::from_env())
    }

    /// A runner with `config`.
    pub fn with_config(config: Config) -> Self {
        ServiceRunner {
            config,
            transport: None,
            starters: Vec::new(),
            names: Vec::new(),
        }
    }

    /// Runs the services on `transport` instead of a fresh [`MemoryTransport`].
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Adds one instance of a service. Add a service again for more instances.
    pub fn service<S: Service>(self, service: S) -> Self {
        self.service_arc(Arc::new(service))
    }

    pub(crate) fn service_arc<S: Service>(mut self, service: Arc<S>) -> Self {
        if !self.names.contains(&S::NAME) {
            self.names.push(S::NAME);
        }
        self.starters.push(Box::new(move |rt: Runtime| {
            Box::pin(async move {
                let container = Container::new(
                    service,
                    Settings {
                        max_workers: rt.config.max_workers(),
                        parent_calls_tracked: rt.config.parent_calls_tracked(),
                        drain_timeout: rt.config.drain_timeout(),
                        observers: rt.observers.clone(),
                    },
                );
                #[allow(unused_mut)]
                let mut setup = SetupContext::new(S::NAME, rt.transport.clone(), rt.config.clone());
                #[cfg(feature = "http")]
                {
                    setup.hub = rt.hub.clone();
                }
                let serving: Serving = container.start(&setup, &rt.transport).await?;
                #[cfg(feature = "http")]
                {
                    let mut web = rt.web.lock().unwrap_or_else(|p| p.into_inner());
                    if !S::HTTP_ROUTES.is_empty() {
                        web.add_routes(S::NAME, S::HTTP_ROUTES, container.clone());
                    }
                    if S::WEBSOCKET_RPC {
                        web.add_websocket_service(S::NAME);
                    }
                }
                let stop: Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send> =
                    Box::new(move || Box::pin(async move { container.stop(serving).await }));
                Ok(stop)
            })
        }));
        self
    }

    /// The transport the configuration asks for: AMQP when `AMQP_URI` is
    /// set, the embedded memory transport otherwise.
    async fn choose_transport(&self) -> Result<Arc<dyn Transport>, StartError> {
        if let Some(transport) = &self.transport {
            return Ok(transport.clone());
        }
        #[cfg(feature = "amqp")]
        if let Some(settings) = crate::transport::amqp::AmqpSettings::from_config(&self.config) {
            let name = if self.names.is_empty() {
                "client".to_string()
            } else {
                self.names.join(",")
            };
            let transport = crate::transport::amqp::AmqpTransport::connect(settings, &name)
                .await
                .map_err(|e| StartError::Connect(e.to_string()))?;
            return Ok(Arc::new(transport));
        }
        #[cfg(not(feature = "amqp"))]
        if self.config.amqp_uri().is_some() {
            return Err(StartError::Unsupported(
                "AMQP_URI is set, but this build of shimeji has no AMQP transport (feature `amqp`); \
                 unset AMQP_URI to run on the embedded transport"
                    .into(),
            ));
        }
        Ok(Arc::new(MemoryTransport::new()))
    }

    /// Starts every service; on failure stops the ones already started.
    ///
    /// With `METRICS_ADDRESS` set, metrics are recorded and the operations
    /// server (`/metrics`, `/health/live`, `/health/ready`) listens there
    /// from before the services start: ready once they all have.
    pub async fn start(self) -> Result<RunningServices, StartError> {
        self.config.validate()?;
        let metrics_address = self.config.metrics_address();
        if metrics_address.is_some() {
            #[cfg(not(feature = "http"))]
            return Err(StartError::Unsupported(
                "METRICS_ADDRESS is set, but this build of shimeji has no web server (feature `http`); \
                 serve `shimeji::metrics::render()` yourself or unset it"
                    .into(),
            ));
            #[cfg(feature = "http")]
            crate::metrics::enable();
        }
        let transport = self.choose_transport().await?;
        let health = Health::new(transport.clone());
        let rt = Runtime {
            config: Arc::new(self.config),
            transport,
            health,
            observers: Observers::new(),
            #[cfg(feature = "http")]
            web: Arc::default(),
            #[cfg(feature = "http")]
            hub: Arc::default(),
        };
        let mut running = RunningServices {
            rt: rt.clone(),
            stops: Vec::new(),
            #[cfg(feature = "http")]
            web: None,
            #[cfg(feature = "http")]
            ops: None,
        };
        #[cfg(feature = "http")]
        if let Some(address) = metrics_address {
            let shutdown = tokio_util::sync::CancellationToken::new();
            let (address, task) =
                crate::http::ops::serve(&address, rt.health.clone(), shutdown.clone())
                    .await
                    .map_err(StartError::Unsupported)?;
            running.ops = Some(WebServer {
                address,
                task,
                shutdown,
            });
        }
        for start in self.starters {
            match start(rt.clone()).await {
                Ok(stop) => running.stops.push(stop),
                Err(e) => {
                    running.stop().await;
                    return Err(e);
                }
            }
        }
        #[cfg(feature = "http")]
        if let Err(e) = running.start_web().await {
            running.stop().await;
            return Err(e);
        }
        rt.health.set_stage(Stage::Serving);
        Ok(running)
    }

    /// Starts every service, serves until SIGTERM or Ctrl-C, then stops them
    /// gracefully.
    pub async fn run(self) -> Result<(), StartError> {
        self.start().await?.run_until_signal().await;
        Ok(())
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Services that run; drop does not stop them, [`stop`](Self::stop) does.
pub struct RunningServices {
    rt: Runtime,
    stops: Vec<Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>>,
    #[cfg(feature = "http")]
    web: Option<WebServer>,
    /// The operations server on `METRICS_ADDRESS`.
    #[cfg(feature = "http")]
    ops: Option<WebServer>,
}

#[cfg(feature = "http")]
struct WebServer {
    address: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl RunningServices {
    /// Starts the web server when a service has HTTP or WebSocket entrypoints.
    #[cfg(feature = "http")]
    async fn start_web(&mut self) -> Result<(), StartError> {
        let app = std::mem::take(&mut *self.rt.web.lock().unwrap_or_else(|p| p.into_inner()));
        if app.is_empty() {
            return Ok(());
        }
        let config = &self.rt.config;
        let address = config
            .get::<String>("WEB_SERVER_ADDRESS")?
            .unwrap_or_else(|| crate::http::DEFAULT_WEB_SERVER_ADDRESS.to_string());
        let limits = crate::http::server::WebLimits::from_config(config)?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (address, task) = crate::http::server::serve(
            app,
            &address,
            limits,
            self.rt.hub.clone(),
            self.dynamic_client(),
            shutdown.clone(),
        )
        .await
        .map_err(StartError::Unsupported)?;
        self.web = Some(WebServer {
            address,
            task,
            shutdown,
        });
        Ok(())
    }

    /// The address the web server listens on, when one runs.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn web_address(&self) -> Option<std::net::SocketAddr> {
        self.web.as_ref().map(|w| w.address)
    }

    /// The address `/metrics` and `/health/*` are served on, when
    /// `METRICS_ADDRESS` is set.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.ops.as_ref().map(|w| w.address)
    }

    /// Liveness and readiness of these services.
    pub fn health(&self) -> Health {
        self.rt.health.clone()
    }

    /// A typed client for a service, e.g. `let g: GreeterClient = running.client();`.
    pub fn client<C: ServiceClient>(&self) -> C {
        C::from(self.dynamic_client())
    }

    /// A client that calls any service by name with JSON.
    pub fn dynamic_client(&self) -> Client {
        Client::new(self.rt.transport.clone(), self.rt.config.rpc_timeout())
    }

    /// An event dispatcher that dispatches as service `source`.
    pub fn event_dispatcher(&self, source: &'static str) -> crate::EventDispatcher {
        crate::EventDispatcher::new(source, self.rt.transport.clone())
    }

    /// The transport the services run on.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.rt.transport
    }

    /// The configuration the services run with.
    pub fn config(&self) -> &Config {
        &self.rt.config
    }

    /// Waits for the next run of `service.entrypoint` to finish. Create the
    /// waiter *before* triggering the work.
    ///
    /// ```
    /// # use shimeji::prelude::*;
    /// # use std::time::Duration;
    /// # #[derive(Default)] struct Mailer;
    /// # #[service(name = "mailer")]
    /// # impl Mailer { #[event_handler("accounts", "user_created")] async fn welcome(&self, _user: serde_json::Value) {} }
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let running = ServiceRunner::new().service(Mailer).start().await?;
    /// let waiter = running.entrypoint_waiter("mailer", "welcome");
    /// running.event_dispatcher("accounts").dispatch("user_created", serde_json::json!({"id": 1})).await?;
    /// let finished = waiter.wait(Duration::from_secs(1)).await?;
    /// assert!(finished.result.is_ok());
    /// # running.stop().await; Ok(()) }
    /// ```
    pub fn entrypoint_waiter(&self, service: &str, entrypoint: &str) -> EntrypointWaiter {
        let observers = self.rt.observers.clone();
        let finished = observers.finished.subscribe();
        observers.watching.fetch_add(1, Ordering::Relaxed);
        EntrypointWaiter {
            service: service.to_string(),
            entrypoint: entrypoint.to_string(),
            finished,
            observers,
        }
    }

    /// Serves until SIGTERM or Ctrl-C, then stops gracefully.
    pub async fn run_until_signal(self) {
        shutdown_signal().await;
        tracing::info!("shutdown signal received: draining");
        self.stop().await;
    }

    /// Stops every service: stop taking work, drain, stop dependencies.
    pub async fn stop(self) {
        self.rt.health.set_stage(Stage::Draining);
        #[cfg(feature = "http")]
        if let Some(web) = &self.web {
            web.shutdown.cancel();
        }
        let stops = self.stops.into_iter().map(|stop| stop());
        futures::future::join_all(stops).await;
        self.rt.health.set_stage(Stage::Stopped);
        #[cfg(feature = "http")]
        for server in [self.web, self.ops].into_iter().flatten() {
            server.shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), server.task).await;
        }
    }
}

/// Waits for an entrypoint to finish; see [`RunningServices::entrypoint_waiter`].
pub struct EntrypointWaiter {
    service: String,
    entrypoint: String,
    finished: broadcast::Receiver<Finished>,
    observers: Arc<Observers>,
}

impl Drop for EntrypointWaiter {
    fn drop(&mut self) {
        self.observers.watching.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The entrypoint did not finish in time.
#[derive(Debug, thiserror::Error)]
#[error("`{service}.{entrypoint}` did not finish within {timeout:?}")]
pub struct WaitTimeout {
    /// The service waited on.
    pub service: String,
    /// The entrypoint waited on.
    pub entrypoint: String,
    /// The timeout that ran out.
    pub timeout: Duration,
}

impl EntrypointWaiter {
    /// Resolves with the first matching run that finishes within `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Result<Finished, WaitTimeout> {
        let matching = async {
            loop {
                match self.finished.recv().await {
                    Ok(f) if f.service == self.service && f.entrypoint == self.entrypoint => {
                        return Some(f)
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        match tokio::time::timeout(timeout, matching).await {
            Ok(Some(f)) => Ok(f),
            _ => Err(WaitTimeout {
                service: self.service.clone(),
                entrypoint: self.entrypoint.clone(),
                timeout,
            }),
        }
    }
}
