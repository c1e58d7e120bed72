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

use crate::client::Client;
use crate::config::Config;
use crate::container::Waiters;
use crate::container::{Container, StartError};
use crate::dependency::Extensions;
use crate::health::Health;
use crate::service::Service;
use crate::transport::Transport;

/// What the services of one runner share.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) health: Health,
}

impl Shared {
    /// A client that calls any service by name, with the runner's timeout.
    pub(crate) fn client(&self) -> Client {
        Client::new(self.transport.clone(), self.config.rpc_timeout())
    }
}

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
}

/// What every extension learns of a service instance that started.
pub(crate) struct ServiceInfo<'a> {
    /// The service's name.
    pub(crate) name: &'static str,
    /// Whether its RPC entrypoints answer on the WebSocket hub.
    pub(crate) websocket_rpc: bool,
    /// What the service's own type plugged in (see [`ServicePlugIns`]).
    plugs: &'a [Box<dyn Any + Send + Sync>],
}

impl ServiceInfo<'_> {
    /// The plug of type `T` the service's type added, if it added one.
    pub(crate) fn plug<T: Any>(&self) -> Option<&T> {
        self.plugs.iter().find_map(|p| p.downcast_ref())
    }
}

/// The extensions of one runner, in the order they open.
#[derive(Default)]
pub(crate) struct RunnerExtensions {
    all: Vec<Box<dyn RunnerExtension>>,
}

impl RunnerExtensions {
    /// The extensions `all`, in the order they open.
    pub(crate) fn new(all: Vec<Box<dyn RunnerExtension>>) -> Self {
        RunnerExtensions { all }
    }

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
        let mut plug_ins = ServicePlugIns {
            container: container.clone(),
            plugs: Vec::new(),
        };
        S::plug_in(&mut plug_ins);
        let info = ServiceInfo {
            name: S::NAME,
            websocket_rpc: S::WEBSOCKET_RPC,
            plugs: &plug_ins.plugs,
        };
        for extension in &mut self.all {
            extension.service_started(&info);
        }
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
}

/// A service instance that started, as its own type sees the runner's
/// extensions: where what only the service's type knows (its HTTP routes)
/// plugs in. [`Service::plug_in`] receives it as `&mut dyn Any`, so the
/// core trait names nothing of the runner; the plug-in (`http::__plug_in`)
/// downcasts it back, adds a plug of its own type, and its extension finds
/// that plug in the [`ServiceInfo`] it is told.
pub(crate) struct ServicePlugIns<S: Service> {
    container: Arc<Container<S>>,
    plugs: Vec<Box<dyn Any + Send + Sync>>,
}

impl<S: Service> ServicePlugIns<S> {
    /// The service instance's container.
    pub(crate) fn container(&self) -> &Arc<Container<S>> {
        &self.container
    }

    /// Adds a plug for an extension to find by its type.
    pub(crate) fn add(&mut self, plug: impl Any + Send + Sync) {
        self.plugs.push(Box::new(plug));
    }
}
