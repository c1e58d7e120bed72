//! One service instance as the runner sees it: started, then stopped,
//! whatever its service's type.

use futures::future::BoxFuture;
use std::sync::Arc;

use crate::container::{Container, Limits, StartError};
use crate::dependency::{Extensions, SetupContext};
use crate::extension::{RunnerExtensions, Shared};
use crate::service::Service;
use crate::transport::Serving;

/// A service instance waiting to be started.
pub(super) trait Pending: Send {
    /// Sets it up on `runner`'s transport with the extensions' `values`,
    /// starts it, and tells the `extensions`.
    fn start<'a>(
        self: Box<Self>,
        runner: &'a Shared,
        values: &'a Extensions,
        extensions: &'a mut RunnerExtensions,
    ) -> BoxFuture<'a, Result<Box<dyn Started>, StartError>>;
}

/// A service instance that started.
pub(super) trait Started: Send {
    /// Resolves once its dependencies are ready.
    fn ready(&self) -> BoxFuture<'static, ()>;

    /// Stops it: no new work, drain, stop its dependencies.
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// An instance of service `S`, not started yet.
pub(super) struct Instance<S>(pub(super) Arc<S>);

impl<S: Service> Pending for Instance<S> {
    fn start<'a>(
        self: Box<Self>,
        runner: &'a Shared,
        values: &'a Extensions,
        extensions: &'a mut RunnerExtensions,
    ) -> BoxFuture<'a, Result<Box<dyn Started>, StartError>> {
        Box::pin(async move {
            let container = Container::new(
                self.0,
                Limits {
                    max_workers: runner.config.max_workers(),
                    parent_calls_tracked: runner.config.parent_calls_tracked(),
                    drain_timeout: runner.config.drain_timeout(),
                },
                runner.waiters.clone(),
            );
            let setup = SetupContext::new(S::NAME, runner.transport.clone(), runner.config.clone())
                .with_extensions(values.clone());
            let serving = container.start(&setup, &runner.transport).await?;
            extensions.service_started(&container);
            let started: Box<dyn Started> = Box::new(Running { container, serving });
            Ok(started)
        })
    }
}

/// A started instance of service `S`.
struct Running<S: Service> {
    container: Arc<Container<S>>,
    serving: Serving,
}

impl<S: Service> Started for Running<S> {
    fn ready(&self) -> BoxFuture<'static, ()> {
        let container = self.container.clone();
        Box::pin(async move { container.ready().await })
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        let Running { container, serving } = *self;
        Box::pin(async move { container.stop(serving).await })
    }
}
