//! Services that run: clients, waiters, health, and the way to stop them.

use std::sync::Arc;

use super::instance::Started;
use super::registrar::Registrar;
use super::{shutdown_signal, EntrypointWaiter};
use crate::client::{Client, ServiceClient};
use crate::config::Config;
use crate::extension::{RunnerExtension, RunnerExtensions, Shared};
use crate::health::{Health, Stage};
use crate::registry::{Registration, Registry};
use crate::transport::Transport;

/// Services that run; drop does not stop them, [`stop`](Self::stop) does.
pub struct RunningServices {
    pub(super) shared: Shared,
    pub(super) extensions: RunnerExtensions,
    /// The instances started, in order.
    pub(super) instances: Vec<Box<dyn Started>>,
    pub(super) registrar: Registrar,
}

impl RunningServices {
    pub(super) fn new(shared: Shared, extensions: RunnerExtensions, registrar: Registrar) -> Self {
        RunningServices {
            shared,
            extensions,
            instances: Vec::new(),
            registrar,
        }
    }

    /// The service registry the services registered in.
    pub fn registry(&self) -> &Registry {
        self.registrar.registry()
    }

    /// The services' registrations, one for each service (none once
    /// stopping).
    pub fn registrations(&self) -> &[Registration] {
        self.registrar.registrations()
    }

    /// The runner's extension of type `T`, if it has one.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn extension<T: RunnerExtension>(&self) -> Option<&T> {
        self.extensions.get()
    }

    /// The address the web server listens on, when one runs.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn web_address(&self) -> Option<std::net::SocketAddr> {
        self.extension::<crate::http::server::WebServer>()?
            .address()
    }

    /// The address `/metrics` and `/health/*` are served on, when
    /// `METRICS_ADDRESS` is set.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.extension::<crate::http::ops::OpsServer>()?.address()
    }

    /// Liveness and readiness of these services.
    pub fn health(&self) -> Health {
        self.shared.health.clone()
    }

    /// A typed client for a service, e.g. `let g: GreeterClient = running.client();`.
    pub fn client<C: ServiceClient>(&self) -> C {
        C::from(self.dynamic_client())
    }

    /// A client that calls any service by name with JSON.
    pub fn dynamic_client(&self) -> Client {
        self.shared.client()
    }

    /// An event dispatcher that dispatches as service `source`.
    pub fn event_dispatcher(&self, source: &'static str) -> crate::EventDispatcher {
        crate::EventDispatcher::new(source, self.shared.transport.clone())
    }

    /// The transport the services run on.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.shared.transport
    }

    /// The configuration the services run with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Waits for the next run of `service.entrypoint` to finish. Create the
    /// waiter *before* triggering the work.
    ///
    /// ```
    /// # use shimeji::prelude::*;
    /// # use std::time::Duration;
    /// # #[derive(Default, Dependencies)] struct Mailer;
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
        EntrypointWaiter::new(self.shared.waiters.clone(), service, entrypoint)
    }

    /// Serves until SIGTERM or Ctrl-C, then stops gracefully.
    pub async fn run_until_signal(self) {
        shutdown_signal().await;
        tracing::info!("shutdown signal received: draining");
        self.stop().await;
    }

    /// Stops every service, in the order that loses no request behind a
    /// router (see [the runner's docs](super#registry-and-the-order-of-a-stop)):
    /// not ready, deregister, wait for the routers, stop accepting and
    /// close idle connections, drain, stop dependencies; then the servers
    /// the runner started.
    pub async fn stop(mut self) {
        self.shared.health.set_stage(Stage::Draining);
        self.registrar.withdraw(&self.shared.config).await;
        self.extensions.draining();
        let stops = self.instances.into_iter().map(|instance| instance.stop());
        futures::future::join_all(stops).await;
        self.shared.health.set_stage(Stage::Stopped);
        self.extensions.stop().await;
    }
}
