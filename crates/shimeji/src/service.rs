//! The service model: what `#[service]` generates for a struct.
//!
//! A service is a struct plus an `impl` block marked `#[service(name = "…")]`.
//! Methods marked `#[rpc]` become RPC entrypoints, methods marked
//! `#[event_handler(source, event_type, …)]` event entrypoints. The macro
//! implements [`Service`] (the dispatch by method name), a typed client
//! `{Struct}Client`, and a [`ServiceDescription`].
//!
//! ```
//! use shimeji::prelude::*;
//!
//! #[derive(Default)]
//! struct Calculator;
//!
//! #[service(name = "calculator")]
//! impl Calculator {
//!     /// Adds two numbers.
//!     #[rpc]
//!     async fn add(&self, a: i64, b: i64) -> i64 {
//!         a + b
//!     }
//! }
//!
//! let description = Calculator::describe();
//! assert_eq!(description.name, "calculator");
//! assert_eq!(description.rpc[0].name, "add");
//! assert_eq!(description.rpc[0].args[1].name, "b");
//! assert_eq!(description.rpc[0].args[1].ty, "i64");
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;

use crate::dependency::Dependency;
use crate::error::RemoteError;
use crate::payload::Payload;

/// Which instances get an event (Nameko's `handler_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HandlerType {
    /// One instance of each handling service gets the event (the default).
    #[default]
    ServicePool,
    /// One instance in the whole cluster gets the event.
    Singleton,
    /// Every instance gets the event.
    Broadcast,
}

impl HandlerType {
    /// Nameko's name for the handler type.
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerType::ServicePool => "service_pool",
            HandlerType::Singleton => "singleton",
            HandlerType::Broadcast => "broadcast",
        }
    }
}

/// An event handler entrypoint, as the container and transports need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHandlerSpec {
    /// The method that handles the event.
    pub method: &'static str,
    /// The service that dispatches the event.
    pub source: &'static str,
    /// The event type.
    pub event_type: &'static str,
    /// Which instances get the event.
    pub handler_type: HandlerType,
    /// Keep undelivered events while no instance is running (default true).
    pub reliable_delivery: bool,
}

/// A timer entrypoint: `#[timer(interval = "5s", eager = true)]`.
///
/// Runs never overlap: a run still going when the next tick comes makes the
/// timer skip that tick, and the next run starts on the following one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerSpec {
    /// The method to run.
    pub method: &'static str,
    /// Time between runs, in milliseconds.
    pub interval_ms: u64,
    /// Run once at start, without waiting for the first interval.
    pub eager: bool,
}

/// A service: the dispatch `#[service]` generates. Not meant to be
/// implemented by hand.
pub trait Service: Send + Sync + 'static {
    /// The service's name: its address.
    const NAME: &'static str;
    /// The names of its RPC entrypoints.
    const RPC_METHODS: &'static [&'static str];
    /// Its event handler entrypoints.
    const EVENT_HANDLERS: &'static [EventHandlerSpec];
    /// Its timer entrypoints.
    const TIMERS: &'static [TimerSpec] = &[];
    /// Whether its RPC entrypoints answer on the WebSocket hub
    /// (`#[service(name = "…", websocket)]`).
    const WEBSOCKET_RPC: bool = false;
    /// Its HTTP entrypoints.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    const HTTP_ROUTES: &'static [crate::http::HttpRouteSpec] = &[];

    /// Runs HTTP entrypoint `name` for a request.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    fn dispatch_http(
        &self,
        name: &'static str,
        request: crate::http::Request,
    ) -> impl Future<Output = crate::http::Response> + Send + '_ {
        let _ = request;
        async move { crate::http::not_found(name) }
    }

    /// The error types entrypoint `entrypoint` declares (its error type's
    /// [`Exception::declared_types`](crate::Exception::declared_types)):
    /// the outcome labels its failures get in metrics.
    fn declared_errors(entrypoint: &str) -> &'static [&'static str] {
        let _ = entrypoint;
        &[]
    }

    /// A machine-readable description of the service.
    fn describe() -> ServiceDescription;

    /// Runs RPC entrypoint `method` with the request `payload`.
    fn dispatch_rpc(
        &self,
        method: &'static str,
        payload: Payload,
    ) -> impl Future<Output = Result<Payload, RemoteError>> + Send + '_;

    /// Runs event handler `method` with the event `payload`.
    fn dispatch_event(
        &self,
        method: &'static str,
        payload: Value,
    ) -> impl Future<Output = Result<(), RemoteError>> + Send + '_;

    /// Runs timer entrypoint `method`.
    fn dispatch_timer(
        &self,
        method: &'static str,
    ) -> impl Future<Output = Result<(), RemoteError>> + Send + '_ {
        async move { Err(RemoteError::method_not_found(method)) }
    }

    /// The service's dependencies (fields that implement [`Dependency`]).
    fn dependencies(&self) -> Vec<&dyn Dependency>;
}

/// A machine-readable description of a service, for schema tooling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDescription {
    /// The service's name.
    pub name: String,
    /// RPC entrypoints.
    pub rpc: Vec<RpcDescription>,
    /// Event handler entrypoints.
    pub event_handlers: Vec<EventHandlerDescription>,
    /// Event types the service declares it dispatches (`events = [...]`).
    pub events: Vec<String>,
    /// Timer entrypoints.
    #[serde(default)]
    pub timers: Vec<TimerDescription>,
}

/// One timer entrypoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerDescription {
    /// Method name.
    pub name: String,
    /// Time between runs, in milliseconds.
    pub interval_ms: u64,
    /// Whether it runs once at start.
    pub eager: bool,
}

/// One RPC entrypoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcDescription {
    /// Method name.
    pub name: String,
    /// Parameters, in order.
    pub args: Vec<ArgDescription>,
    /// The result type, as written in the source.
    pub returns: String,
    /// The error type, as written, when the method returns a `Result`.
    pub error: Option<String>,
    /// The method's doc comment.
    pub doc: String,
}

/// One parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArgDescription {
    /// Parameter name.
    pub name: String,
    /// Parameter type, as written in the source.
    pub ty: String,
}

/// One event handler entrypoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventHandlerDescription {
    /// Method name.
    pub name: String,
    /// The dispatching service.
    pub source: String,
    /// The event type.
    pub event_type: String,
    /// Which instances get the event.
    pub handler_type: HandlerType,
    /// Whether events wait while the service is down.
    pub reliable_delivery: bool,
    /// The payload type, as written in the source.
    pub payload: String,
}
