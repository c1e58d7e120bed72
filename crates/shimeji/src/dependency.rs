//! Dependencies: fields of a service that the container manages.
//!
//! A dependency is any field whose type implements [`Dependency`]. The
//! container calls its lifecycle hooks when the service instance starts and
//! stops, and its per-call hooks around every worker. Built in: the typed
//! clients `#[service]` generates, [`Client`](crate::Client),
//! [`EventDispatcher`](crate::EventDispatcher) and
//! [`ServiceConfig`](crate::ServiceConfig).
//!
//! Mark the service struct `#[derive(Dependencies)]` so the container finds
//! its dependency fields; fields of other types are left alone. Every
//! service struct needs the derive, one without dependency fields too:
//! forgetting it is a compile error. A field typed `Arc<D>` or `Option<D>`
//! for a dependency `D` is a dependency as well (`None` does nothing).
//!
//! ```
//! use shimeji::prelude::*;
//! use shimeji::dependency::Dependency;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! /// Counts the workers that ran.
//! #[derive(Default)]
//! struct WorkerCount(AtomicUsize);
//!
//! impl Dependency for WorkerCount {
//!     fn worker_setup(&self, _worker: &WorkerContext) {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!     }
//!     fn has_worker_hooks(&self) -> bool {
//!         true
//!     }
//! }
//!
//! #[derive(Default, Dependencies)]
//! struct Pinger {
//!     count: WorkerCount,
//!     greeting: String, // not a dependency: ignored
//! }
//!
//! #[service(name = "pinger")]
//! impl Pinger {
//!     #[rpc]
//!     async fn ping(&self) -> usize {
//!         self.count.0.load(Ordering::Relaxed)
//!     }
//! }
//! ```

pub use futures::future::BoxFuture;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::context::WorkerContext;
use crate::error::RemoteError;
use crate::transport::Transport;

/// Why a dependency failed to set up, start or stop.
#[derive(Debug, thiserror::Error)]
#[error("dependency `{name}` failed: {message}")]
pub struct DependencyError {
    /// The dependency's name.
    pub name: String,
    /// What went wrong.
    pub message: String,
}

impl DependencyError {
    /// A new error for dependency `name`.
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        DependencyError {
            name: name.into(),
            message: message.into(),
        }
    }
}

/// What a dependency learns when its service instance is set up.
///
/// Besides the service's name, transport and configuration, it carries
/// typed values that the runner's parts provide to every dependency (a map
/// keyed by type, like `http::Extensions`): [`insert`](Self::insert) one,
/// [`get`](Self::get) it back by its type.
///
/// ```
/// use shimeji::prelude::*;
/// use shimeji::transport::MemoryTransport;
/// use std::sync::Arc;
///
/// #[derive(Debug, PartialEq)]
/// struct Region(&'static str);
///
/// let mut ctx = SetupContext::new("greeter", Arc::new(MemoryTransport::new()), Arc::new(Config::new()));
/// ctx.insert(Region("eu-west"));
/// assert_eq!(ctx.get::<Region>(), Some(&Region("eu-west")));
/// assert_eq!(ctx.get::<String>(), None);
/// ```
#[derive(Clone)]
pub struct SetupContext {
    pub(crate) service: &'static str,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) config: Arc<Config>,
    extensions: Extensions,
}

/// Values of any type, at most one per type: what a [`SetupContext`]
/// carries besides its fixed fields. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Extensions {
    values: Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Extensions {
    /// Adds `value`, replacing the value of its type, if any.
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        Arc::make_mut(&mut self.values).insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if there is one.
    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values.get(&TypeId::of::<T>())?.downcast_ref()
    }
}

impl SetupContext {
    /// A setup context for `service` on `transport`.
    pub fn new(service: &'static str, transport: Arc<dyn Transport>, config: Arc<Config>) -> Self {
        SetupContext {
            service,
            transport,
            config,
            extensions: Extensions::default(),
        }
    }

    /// This context, carrying `extensions` instead of its own.
    pub(crate) fn with_extensions(mut self, extensions: Extensions) -> Self {
        self.extensions = extensions;
        self
    }

    /// The name of the service the dependency belongs to.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The transport the service runs on.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The runner's configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Adds a value for the dependencies set up with this context to find
    /// by its type; it replaces the value of that type, if any.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.extensions.insert(value);
    }

    /// The value of type `T` this context carries, if any.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions.get()
    }
}

/// A field of a service that the container manages.
///
/// Every hook has a default that does nothing, so a dependency implements
/// only what it needs. Lifecycle hooks are async; per-call hooks are plain
/// functions and run on the worker's task, so keep them short.
pub trait Dependency: Send + Sync {
    /// Called once before the service starts: connect, bind to the transport.
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        let _ = ctx;
        Box::pin(async { Ok(()) })
    }

    /// Called once when the service starts serving.
    fn start(&self) -> BoxFuture<'_, Result<(), DependencyError>> {
        Box::pin(async { Ok(()) })
    }

    /// Resolves once the dependency can serve — a cache loaded from another
    /// service, say, which the service's timers or handlers fill. The
    /// runner waits for it (at most `ready_timeout`, default 10 s, then it
    /// warns and goes on) after every service has started and before
    /// `/health/ready` answers 200 and the instance registers, so routers
    /// send it nothing before.
    ///
    /// ```
    /// use shimeji::prelude::*;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// #[derive(Default)]
    /// struct Blocklist { loaded: AtomicBool, load: tokio::sync::Notify }
    ///
    /// impl Dependency for Blocklist {
    ///     fn ready(&self) -> BoxFuture<'_, ()> {
    ///         Box::pin(async move {
    ///             loop {
    ///                 let loaded = self.load.notified();
    ///                 if self.loaded.load(Ordering::SeqCst) { return; }
    ///                 loaded.await;
    ///             }
    ///         })
    ///     }
    /// }
    /// ```
    fn ready(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Called once when the service begins to stop, before its workers
    /// drain: the instance no longer receives new work (routers have
    /// applied its deregistration). End here what holds a worker or a
    /// client open indefinitely — long polls, streams, sockets — so that the
    /// drain finishes and clients move to another instance.
    ///
    /// ```
    /// use shimeji::prelude::*;
    ///
    /// struct Feeds { /* open subscriptions */ }
    ///
    /// impl Dependency for Feeds {
    ///     fn draining(&self) -> BoxFuture<'_, ()> {
    ///         Box::pin(async { /* tell each subscriber to reconnect elsewhere */ })
    ///     }
    /// }
    /// ```
    fn draining(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Called once after the service stopped and drained its workers.
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Before each worker runs.
    fn worker_setup(&self, worker: &WorkerContext) {
        let _ = worker;
    }

    /// After each worker ran, with its outcome.
    fn worker_result(&self, worker: &WorkerContext, result: Result<(), &RemoteError>) {
        let _ = (worker, result);
    }

    /// After each worker, last.
    fn worker_teardown(&self, worker: &WorkerContext) {
        let _ = worker;
    }

    /// Return true to have the per-call hooks called. Defaults to false so
    /// that services without per-call hooks pay nothing for them.
    fn has_worker_hooks(&self) -> bool {
        false
    }
}

/// A shared dependency is the dependency: an `Arc<EventDispatcher>` field
/// is set up like an `EventDispatcher` field.
impl<T: Dependency + ?Sized> Dependency for Arc<T> {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        (**self).setup(ctx)
    }

    fn start(&self) -> BoxFuture<'_, Result<(), DependencyError>> {
        (**self).start()
    }

    fn ready(&self) -> BoxFuture<'_, ()> {
        (**self).ready()
    }

    fn draining(&self) -> BoxFuture<'_, ()> {
        (**self).draining()
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        (**self).stop()
    }

    fn worker_setup(&self, worker: &WorkerContext) {
        (**self).worker_setup(worker)
    }

    fn worker_result(&self, worker: &WorkerContext, result: Result<(), &RemoteError>) {
        (**self).worker_result(worker, result)
    }

    fn worker_teardown(&self, worker: &WorkerContext) {
        (**self).worker_teardown(worker)
    }

    fn has_worker_hooks(&self) -> bool {
        (**self).has_worker_hooks()
    }
}

/// An optional dependency: `Some` is the dependency, `None` does nothing.
impl<T: Dependency> Dependency for Option<T> {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        match self {
            Some(dep) => dep.setup(ctx),
            None => Box::pin(async { Ok(()) }),
        }
    }

    fn start(&self) -> BoxFuture<'_, Result<(), DependencyError>> {
        match self {
            Some(dep) => dep.start(),
            None => Box::pin(async { Ok(()) }),
        }
    }

    fn ready(&self) -> BoxFuture<'_, ()> {
        match self {
            Some(dep) => dep.ready(),
            None => Box::pin(async {}),
        }
    }

    fn draining(&self) -> BoxFuture<'_, ()> {
        match self {
            Some(dep) => dep.draining(),
            None => Box::pin(async {}),
        }
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        match self {
            Some(dep) => dep.stop(),
            None => Box::pin(async {}),
        }
    }

    fn worker_setup(&self, worker: &WorkerContext) {
        if let Some(dep) = self {
            dep.worker_setup(worker);
        }
    }

    fn worker_result(&self, worker: &WorkerContext, result: Result<(), &RemoteError>) {
        if let Some(dep) = self {
            dep.worker_result(worker, result);
        }
    }

    fn worker_teardown(&self, worker: &WorkerContext) {
        if let Some(dep) = self {
            dep.worker_teardown(worker);
        }
    }

    fn has_worker_hooks(&self) -> bool {
        self.as_ref().is_some_and(Dependency::has_worker_hooks)
    }
}

/// Lists a service struct's dependency fields. Derive it with
/// `#[derive(Dependencies)]`.
///
/// Every service needs it, a service without dependencies too: the
/// container sets up, starts and stops exactly what it lists.
#[diagnostic::on_unimplemented(
    message = "the service `{Self}` does not list its dependencies",
    label = "`{Self}` does not derive `Dependencies`",
    note = "add `#[derive(Dependencies)]` to the struct (a struct without dependencies needs it too)"
)]
pub trait Dependencies {
    /// The fields that implement [`Dependency`].
    fn dependencies(&self) -> Vec<&dyn Dependency>;
}

#[doc(hidden)]
pub mod probe {
    //! Lets `#[derive(Dependencies)]` tell dependency fields from other
    //! fields without attributes (autoref specialization): a field whose
    //! type implements `Dependency` takes the `IsDependency` method, any
    //! other field the `NotDependency` one.
    use super::Dependency;

    pub struct Probe<'a, T>(pub &'a T);

    pub trait IsDependency<'a> {
        fn as_dependency(&self) -> Option<&'a dyn Dependency>;
    }
    impl<'a, T: Dependency> IsDependency<'a> for &Probe<'a, T> {
        fn as_dependency(&self) -> Option<&'a dyn Dependency> {
            Some(self.0)
        }
    }
    pub trait NotDependency<'a> {
        fn as_dependency(&self) -> Option<&'a dyn Dependency>;
    }
    impl<'a, T> NotDependency<'a> for Probe<'a, T> {
        fn as_dependency(&self) -> Option<&'a dyn Dependency> {
            None
        }
    }
}
