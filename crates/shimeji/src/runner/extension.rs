//! The runner's extension seam: what a build adds to every runner (the web
//! server, the operations server) plugs in here instead of into the runner.
//!
//! A runner tells each of its extensions, in order:
//!
//! 1. [`open`](RunnerExtension::open): before any service starts, on the
//!    chosen transport. An extension may add values for the services'
//!    dependencies to find in their [`SetupContext`](crate::dependency::SetupContext),
//!    and start what must run while services start (health checks).
//! 2. [`service_started`](RunnerExtension::service_started): once per
//!    service instance that started. What only the service's own type
//!    knows (its HTTP routes) reaches the extension through [`PlugIns`].
//! 3. [`start`](RunnerExtension::start): every service started.
//! 4. [`draining`](RunnerExtension::draining): the services begin to
//!    drain; take no new work.
//! 5. [`stop`](RunnerExtension::stop): the services stopped; extensions
//!    stop in the reverse of their order.
//!
//! A runner that fails to start stops what it started, extensions included.
//! The extensions of a build are listed in [`registered`], the one place
//! that knows the features.

// Without `http` a build has no extension: the seam stays, unused.
#![cfg_attr(not(feature = "http"), allow(dead_code))]

use futures::future::BoxFuture;
use std::any::Any;
use std::sync::Arc;

use super::Shared;
use crate::config::Config;
use crate::container::{Container, StartError};
use crate::dependency::Extensions;
use crate::service::Service;

/// A part of the runner that a build may or may not have.
pub(crate) trait RunnerExtension: Any + Send + Sync {
    /// Before any service starts: `values` are what every service's
    /// dependencies will find in their setup context.
    fn open<'a>(
        &'a mut self,
        runner: &'a Shared,
        values: &'a mut Extensions,
    ) -> BoxFuture<'a, Result<(), StartError>> {
        let _ = (runner, values);
        Box::pin(async { Ok(()) })
    }

    /// A service instance started.
    fn service_started(&mut self, service: &ServiceInfo) {
        let _ = service;
    }

    /// Every service started.
    fn start<'a>(&'a mut self, runner: &'a Shared) -> BoxFuture<'a, Result<(), StartError>> {
        let _ = runner;
        Box::pin(async { Ok(()) })
    }

    /// The services begin to drain: take no new work.
    fn draining(&mut self) {}

    /// The services stopped (or never all started): stop.
    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// This extension, to find it by its type.
    fn as_any(&self) -> &dyn Any;

    /// This extension, to find it by its type.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// What every extension learns of a service instance that started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServiceInfo {
    /// The service's name.
    pub(crate) name: &'static str,
    /// Whether its RPC entrypoints answer on the WebSocket hub.
    pub(crate) websocket_rpc: bool,
}

/// The extensions a runner with `config` gets from this build: the one
/// place that names the features that plug into the runner.
pub(crate) fn registered(config: &Config) -> Result<RunnerExtensions, StartError> {
    #[allow(unused_mut)]
    let mut all: Vec<Box<dyn RunnerExtension>> = Vec::new();
    #[cfg(feature = "http")]
    {
        if let Some(ops) = crate::http::ops::OpsServer::from_config(config) {
            all.push(Box::new(ops));
        }
        all.push(Box::new(crate::http::server::WebServer::default()));
    }
    #[cfg(not(feature = "http"))]
    if config.metrics_address().is_some() {
        return Err(StartError::Unsupported(
            "METRICS_ADDRESS is set, but this build of shimeji has no web server (feature `http`); \
             serve `shimeji::metrics::render()` yourself or unset it"
                .into(),
        ));
    }
    Ok(RunnerExtensions { all })
}

/// The extensions of one runner, in the order they open.
#[derive(Default)]
pub(crate) struct RunnerExtensions {
    all: Vec<Box<dyn RunnerExtension>>,
}

impl RunnerExtensions {
    /// Opens every extension, in order.
    pub(crate) async fn open(
        &mut self,
        runner: &Shared,
        values: &mut Extensions,
    ) -> Result<(), StartError> {
        for extension in &mut self.all {
            extension.open(runner, values).await?;
        }
        Ok(())
    }

    /// Tells every extension that `container`'s service instance started,
    /// and lets the service plug in what only its type knows.
    pub(crate) fn service_started<S: Service>(&mut self, container: &Arc<Container<S>>) {
        let info = ServiceInfo {
            name: S::NAME,
            websocket_rpc: S::WEBSOCKET_RPC,
        };
        for extension in &mut self.all {
            extension.service_started(&info);
        }
        S::plug_in(&mut PlugIns {
            container,
            extensions: self,
        });
    }

    /// Starts every extension, in order.
    pub(crate) async fn start(&mut self, runner: &Shared) -> Result<(), StartError> {
        for extension in &mut self.all {
            extension.start(runner).await?;
        }
        Ok(())
    }

    /// Tells every extension that the services drain.
    pub(crate) fn draining(&mut self) {
        for extension in &mut self.all {
            extension.draining();
        }
    }

    /// Stops every extension, the last opened first.
    pub(crate) async fn stop(&mut self) {
        for extension in self.all.iter_mut().rev() {
            extension.stop().await;
        }
    }

    /// The extension of type `T`, if this runner has one.
    pub(crate) fn get<T: RunnerExtension>(&self) -> Option<&T> {
        self.all.iter().find_map(|e| e.as_any().downcast_ref())
    }

    /// The extension of type `T`, if this runner has one.
    pub(crate) fn get_mut<T: RunnerExtension>(&mut self) -> Option<&mut T> {
        self.all
            .iter_mut()
            .find_map(|e| e.as_any_mut().downcast_mut())
    }
}

/// A service instance that started, as its own type sees the runner's
/// extensions: where what only the service's type knows (its HTTP routes)
/// plugs in. See [`Service::plug_in`].
pub struct PlugIns<'a, S: Service> {
    container: &'a Arc<Container<S>>,
    extensions: &'a mut RunnerExtensions,
}

impl<S: Service> PlugIns<'_, S> {
    /// The service instance's container.
    pub(crate) fn container(&self) -> &Arc<Container<S>> {
        self.container
    }

    /// The runner's extension of type `T`, if it has one.
    pub(crate) fn extension_mut<T: RunnerExtension>(&mut self) -> Option<&mut T> {
        self.extensions.get_mut()
    }
}
