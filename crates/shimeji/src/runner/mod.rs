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

use std::sync::Arc;

use crate::config::Config;
use crate::container::{StartError, Waiters};
use crate::dependency::Extensions;
use crate::extension::Shared;
use crate::health::{Health, Stage};
use crate::service::Service;
use crate::transport::{MemoryTransport, Transport};

mod extensions;
mod instance;
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
    pub async fn start(self) -> Result<RunningServices, StartError> {
        self.config.validate()?;
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
        let mut running = RunningServices::new(shared, extensions);
        if let Err(e) = running.start(self.pending).await {
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
        } = self;
        extensions.open(shared, &mut values).await?;
        for instance in pending {
            instances.push(instance.start(shared, &values, extensions).await?);
        }
        extensions.start(shared).await?;
        shared.health.set_stage(Stage::Serving);
        Ok(())
    }
}
