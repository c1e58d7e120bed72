//! The runner: starts a set of services, hands out clients, stops them.
//!
//! ```no_run
//! use shimeji::prelude::*;
//!
//! #[derive(Default, Dependencies)]
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
//!
//! What a build adds to every runner (the web server and the operations
//! server, with feature `http`) plugs in as a runner extension: the runner
//! itself knows only services, a transport and its configuration.
//!
//! # Registry, and the order of a stop
//!
//! Once every service started, the servers listen and every dependency is
//! [ready](crate::Dependency::ready) (at most `ready_timeout`), the runner
//! registers each service in the [service registry](crate::registry): the one
//! `REGISTRY` names (`etcd://host:2379[,…]`, feature `etcd`), the one given
//! with [`ServiceRunner::registry`], or else an in-process one. Its record
//! names the HTTP address and the routes of the service's `#[http]`
//! entrypoints, so a gateway routes to it with no route file.
//!
//! [`RunningServices::stop`] (and SIGTERM) then goes in the order that
//! loses no request behind a router:
//!
//! 1. `/health/ready` answers 503 (draining);
//! 2. the services deregister (their lease is revoked);
//! 3. the runner waits until every router reports it applied that
//!    revision (at most `deregister_timeout`), or `deregister_delay` when
//!    none reports; the web server still serves meanwhile;
//! 4. the web server stops accepting, finishes the requests in flight and
//!    closes idle keep-alive connections;
//! 5. each service's dependencies end their long-lived work
//!    ([`draining`](crate::Dependency::draining): long polls, sockets), then
//!    the services drain their workers (`drain_timeout`) and stop.
//!
//! | key | default | what |
//! |---|---|---|
//! | `REGISTRY` (or `registry`) | in-process | the registry's URL: `memory`, `etcd://host:2379[,host:2379…]` |
//! | `registry_ttl` | 10 | seconds of the registration's lease, renewed every third of it |
//! | `instance_id` | `<host>-<pid>-<random>` | the instance's id in the registry |
//! | `SERVICE_VERSION` | the service's package version | the version published |
//! | `registry_advertise_address` | the web server's address (host name when it listens on every interface) | the `host:port` routers send requests to |
//! | `sticky_sessions` | false | asks routers to keep each client on one instance |
//! | `deregister_timeout` | 5 | seconds a stopping instance waits for the routers |
//! | `ready_timeout` | 10 | seconds the start waits for dependencies to be ready |
//! | `deregister_delay` | 2 on etcd, 0 in process | seconds it waits when no router reports |

use std::sync::Arc;

use crate::config::Config;
use crate::container::{StartError, Waiters};
use crate::dependency::Extensions;
use crate::extension::Shared;
use crate::health::{Health, Stage};
use crate::registry::Registry;
use crate::service::Service;
use crate::transport::{MemoryTransport, Transport};

mod extensions;
mod instance;
mod registrar;
mod running;
mod signal;
mod waiter;

#[doc(hidden)]
use instance::{Instance, Pending};
pub use running::RunningServices;
pub use signal::shutdown_signal;
pub use waiter::{EntrypointWaiter, WaitTimeout};

/// Collects services, then starts them on one transport.
pub struct ServiceRunner {
    config: Config,
    transport: Option<Arc<dyn Transport>>,
    pending: Vec<Box<dyn Pending>>,
    names: Vec<&'static str>,
    /// The version of each service, in the order of `names`.
    versions: Vec<&'static str>,
    registry: Option<Registry>,
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
            pending: Vec::new(),
            names: Vec::new(),
            versions: Vec::new(),
            registry: None,
        }
    }

    /// Registers the services in `registry` instead of the one the
    /// configuration names (`REGISTRY`) or a fresh in-process one: to share
    /// an in-process registry with a gateway in the same process.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
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
            self.versions.push(S::VERSION);
        }
        self.pending.push(Box::new(Instance(service)));
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
    ///
    /// Once they all started and the servers listen, the services register
    /// in the registry (see the [module docs](self)); a registry that
    /// cannot be reached then fails the start.
    pub async fn start(mut self) -> Result<RunningServices, StartError> {
        self.config.validate()?;
        let registry = match self.registry.take() {
            Some(registry) => registry,
            None => Registry::from_config(&self.config)
                .await
                .map_err(|e| registrar::start_error(&e))?
                .unwrap_or_else(Registry::memory),
        };
        let services = self
            .names
            .iter()
            .copied()
            .zip(self.versions.iter().copied())
            .collect();
        let registrar = registrar::Registrar::new(registry, services);
        // Before the transport: an extension may turn metrics on, and the
        // transport measures from its first connection.
        let extensions = extensions::registered(&self.config)?;
        let transport = self.choose_transport().await?;
        let shared = Shared {
            config: Arc::new(self.config),
            health: Health::new(transport.clone()),
            transport,
            waiters: Waiters::new(),
        };
        let mut running = RunningServices::new(shared, extensions, registrar);
        let started = match running.start(self.pending).await {
            Ok(()) => running.register().await,
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            running.stop().await;
            return Err(e);
        }
        Ok(running)
    }

    /// Starts every service, serves until SIGTERM or Ctrl-C, then stops them
    /// gracefully.
    pub async fn run(self) -> Result<(), StartError> {
        self.start().await?.run_until_signal().await;
        Ok(())
    }
}

impl RunningServices {
    /// Opens the extensions, starts each service instance and tells the
    /// extensions, then starts them.
    async fn start(&mut self, pending: Vec<Box<dyn Pending>>) -> Result<(), StartError> {
        let mut values = Extensions::default();
        let RunningServices {
            shared,
            extensions,
            instances,
            ..
        } = self;
        extensions.open(shared, &mut values).await?;
        for instance in pending {
            instances.push(instance.start(shared, &values, extensions).await?);
        }
        extensions.start(shared).await?;
        // Dependencies that fill from other services (which may have just
        // started) are ready before the instance says it is.
        let timeout = shared.config.ready_timeout();
        let ready = futures::future::join_all(instances.iter().map(|i| i.ready()));
        if tokio::time::timeout(timeout, ready).await.is_err() {
            tracing::warn!(
                "some dependencies were not ready after {timeout:?} (ready_timeout): serving anyway"
            );
        }
        shared.health.set_stage(Stage::Serving);
        Ok(())
    }

    /// Registers the services, which are ready: serving, their listeners
    /// bound.
    async fn register(&mut self) -> Result<(), StartError> {
        #[allow(unused_mut)]
        let mut web = registrar::WebServed::default();
        #[cfg(feature = "http")]
        if let Some(server) = self.extension::<crate::http::server::WebServer>() {
            web.bound = server.address();
            web.routes = server.served().routes.clone();
            web.websocket = server.served().websocket.clone();
        }
        #[cfg(feature = "http")]
        if let Some(ops) = self.extension::<crate::http::ops::OpsServer>() {
            web.ops = ops.address();
        }
        let config = self.shared.config.clone();
        self.registrar.register(&config, &web).await
    }
}
