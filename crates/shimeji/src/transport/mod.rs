//! Transports move requests, replies and events between services.
//!
//! [`Transport`] is the whole boundary: send a request and await its reply,
//! publish an event, serve a service instance (its RPC queue and its event
//! handler queues). The container owns lifecycle, concurrency and draining;
//! a transport only routes and moves payloads.
//!
//! [`MemoryTransport`] is the default: every service in one process, no
//! broker. It keeps Nameko's topology (one RPC queue per service, event
//! queues named and shared per handler type) so a program behaves the same
//! when it moves to a broker.

use futures::future::BoxFuture;
use serde_json::Value;
use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;

use crate::context::WorkerContext;
use crate::entrypoint::{EventHandlerSpec, HandlerType};
use crate::error::{CallError, RemoteError};
use crate::payload::Payload;

#[cfg(feature = "amqp")]
#[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
pub mod amqp;
pub mod memory;

pub use memory::MemoryTransport;

/// A request on its way to a service.
#[derive(Debug)]
pub struct Request {
    /// The service called.
    pub service: Cow<'static, str>,
    /// The method called.
    pub method: Cow<'static, str>,
    /// The arguments.
    pub payload: Payload,
    /// The caller's context, carried to the callee.
    pub context: Option<WorkerContext>,
}

/// An event on its way to its handlers.
#[derive(Debug, Clone)]
pub struct Event {
    /// The dispatching service.
    pub source: Cow<'static, str>,
    /// The event type.
    pub event_type: Cow<'static, str>,
    /// The payload.
    pub payload: Value,
    /// The dispatching worker's context.
    pub context: Option<WorkerContext>,
}

/// What a transport failed to do: serve a service, or publish an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A queue exists with other settings than the ones asked for.
    #[error("queue `{queue}` conflicts with an earlier declaration: {message}")]
    Conflict {
        /// The queue.
        queue: String,
        /// What differs.
        message: String,
    },
    /// The transport failed.
    #[error("transport error: {0}")]
    Other(String),
}

/// Why a service instance did not answer with a result.
///
/// A transport `match`es on it: [`Stopping`](HandlerError::Stopping) work
/// was never started, so it goes back to its queue or to another instance
/// and nothing is lost; a [`Failed`](HandlerError::Failed) run answers its
/// caller with the error.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerError {
    /// The instance is stopping and took no new work.
    Stopping,
    /// The work ran, or could not run, and failed with this error.
    Failed(RemoteError),
}

impl HandlerError {
    /// The error to answer a caller with: a stopping instance that has no
    /// way to pass the work on answers `ServiceStopping`.
    pub fn into_remote(self, service: &str) -> RemoteError {
        match self {
            HandlerError::Stopping => RemoteError::service_stopping(service),
            HandlerError::Failed(error) => error,
        }
    }
}

impl From<RemoteError> for HandlerError {
    fn from(error: RemoteError) -> Self {
        HandlerError::Failed(error)
    }
}

/// What a transport hands work to: one running service instance.
pub trait ServiceHandler: Send + Sync + 'static {
    /// Runs RPC entrypoint `method` on the arguments of the in-process
    /// hand-over `call` ([`LocalCall`](crate::payload::LocalCall)) and puts
    /// the reply in it, for a transport that serves calls in process.
    ///
    /// Declines (`None`, leaving `caller` in place) when `call` is not this
    /// service's hand-over for `method`: the caller then sends the
    /// arguments as a [`Payload`] instead. A call it takes costs one boxed
    /// future and no other allocation of the framework's.
    #[doc(hidden)]
    fn handle_local<'a>(
        &'a self,
        method: &'a str,
        call: &'a mut (dyn Any + Send),
        caller: &mut Option<WorkerContext>,
    ) -> Option<BoxFuture<'a, Result<(), CallError>>> {
        let _ = (method, call, caller);
        None
    }

    /// Runs RPC entrypoint `method` for a request from `caller`.
    fn handle_rpc<'a>(
        &'a self,
        method: &'a str,
        payload: Payload,
        caller: Option<WorkerContext>,
    ) -> BoxFuture<'a, Result<Payload, HandlerError>>;

    /// Runs event handler `handler` (one of the instance's
    /// [`Endpoint::event_handlers`]) for an event dispatched by `caller`.
    fn handle_event(
        &self,
        handler: &'static EventHandlerSpec,
        payload: Value,
        caller: Option<WorkerContext>,
    ) -> BoxFuture<'_, Result<(), HandlerError>>;
}

/// What a transport serves for one service instance: where its work
/// arrives (its RPC queue and its event handlers' queues) and where the
/// transport hands that work ([`ServiceHandler`]).
#[derive(Clone)]
pub struct Endpoint {
    /// The service's name.
    pub service: &'static str,
    /// Unique id of this instance (also the broadcast queue identifier).
    pub instance_id: String,
    /// The instance's worker limit (the broker prefetch on AMQP).
    pub max_workers: usize,
    /// Whether the service has RPC entrypoints.
    pub has_rpc: bool,
    /// The event handlers to subscribe.
    pub event_handlers: &'static [EventHandlerSpec],
    /// Where the work goes.
    pub handler: Arc<dyn ServiceHandler>,
}

/// A serving instance. [`Serving::stop`] stops taking new work; once the
/// workers are done, [`Serving::settle`] waits until the transport has
/// finished with the work they did (replies published, requests acked).
pub struct Serving {
    stop: Option<Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>>,
    settle: Option<Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>>,
}

impl Serving {
    /// A serving handle whose `stop` runs `stop`.
    pub fn new(stop: impl FnOnce() -> BoxFuture<'static, ()> + Send + 'static) -> Self {
        Serving {
            stop: Some(Box::new(stop)),
            settle: None,
        }
    }

    /// The same handle, whose `settle` runs `settle`.
    pub fn with_settle(
        mut self,
        settle: impl FnOnce() -> BoxFuture<'static, ()> + Send + 'static,
    ) -> Self {
        self.settle = Some(Box::new(settle));
        self
    }

    /// Stops consuming: no new requests or events reach the instance.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop().await;
        }
    }

    /// Waits until the work already handed to the instance is settled with
    /// the transport. Call it after the workers have finished; bound it
    /// with a timeout.
    pub async fn settle(mut self) {
        self.stop().await;
        if let Some(settle) = self.settle.take() {
            settle().await;
        }
    }
}

/// Moves requests, replies and events.
pub trait Transport: Send + Sync + 'static {
    /// A short name for logs (`memory`, `amqp`).
    fn name(&self) -> &'static str;

    /// Whether the transport can move messages now: false while a broker
    /// connection is lost and being restored. Readiness checks ask it.
    fn is_connected(&self) -> bool {
        true
    }

    /// Sends a request and waits for its reply. The caller applies the timeout.
    fn call(&self, request: Request) -> BoxFuture<'_, Result<Payload, CallError>>;

    /// Serves a typed call in this process when the transport can: the
    /// in-process hand-over `call` ([`LocalCall`](crate::payload::LocalCall))
    /// carries the arguments in and the reply out. The transport keeps the
    /// instance that serves the call in `serving`, the caller's, for as long
    /// as the call runs. The caller applies the timeout.
    ///
    /// Declines (`None`, leaving `context` in place) when the transport
    /// sends calls elsewhere or the service does not take this hand-over:
    /// the caller then uses [`call`](Self::call). Declining is the default.
    #[doc(hidden)]
    fn call_local<'a>(
        &'a self,
        service: &str,
        method: &'a str,
        call: &'a mut (dyn Any + Send),
        serving: &'a mut Option<Arc<dyn ServiceHandler>>,
        context: &mut Option<WorkerContext>,
    ) -> Option<BoxFuture<'a, Result<(), CallError>>> {
        let _ = (service, method, call, serving, context);
        None
    }

    /// Publishes an event to every queue bound to it.
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), TransportError>>;

    /// Starts consuming for a service instance.
    fn serve(&self, endpoint: Endpoint) -> BoxFuture<'_, Result<Serving, TransportError>>;
}

/// The name of the queue an event handler consumes from, as Nameko names it.
///
/// ```
/// use shimeji::entrypoint::{EntrypointId, EventHandlerSpec, HandlerType};
/// use shimeji::transport::event_queue_name;
///
/// let spec = EventHandlerSpec {
///     id: EntrypointId::new(0), method: "welcome", source: "accounts", event_type: "user_created",
///     handler_type: HandlerType::ServicePool, reliable_delivery: true,
/// };
/// assert_eq!(event_queue_name("greeter", &spec, "abc"), "evt-accounts-user_created--greeter.welcome");
/// ```
pub fn event_queue_name(service: &str, spec: &EventHandlerSpec, instance_id: &str) -> String {
    let EventHandlerSpec {
        method,
        source,
        event_type,
        handler_type,
        ..
    } = spec;
    match handler_type {
        HandlerType::ServicePool => format!("evt-{source}-{event_type}--{service}.{method}"),
        HandlerType::Singleton => format!("evt-{source}-{event_type}"),
        HandlerType::Broadcast => {
            format!("evt-{source}-{event_type}--{service}.{method}-{instance_id}")
        }
    }
}
