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
//! #[derive(Default, Dependencies)]
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
use std::any::Any;
use std::future::Future;

use crate::dependency::Dependencies;
pub use crate::entrypoint::{EntrypointId, EventHandlerSpec, HandlerType, TimerSpec};
use crate::error::RemoteError;
use crate::payload::Payload;

/// A service: the dispatch `#[service]` generates. Not meant to be
/// implemented by hand.
///
/// Its dependencies come from [`Dependencies`], which the service struct
/// derives: `#[derive(Dependencies)]`, also on a struct without any.
pub trait Service: Dependencies + Send + Sync + 'static {
    /// The service's name: its address.
    const NAME: &'static str;
    /// The names of all its entrypoints, in declaration order: RPC
    /// methods, event handlers, timers, HTTP routes. An
    /// [`EntrypointId`] is a position in this list.
    const ENTRYPOINTS: &'static [&'static str];
    /// The names of its RPC entrypoints (the first `RPC_METHODS.len()`
    /// of [`ENTRYPOINTS`](Self::ENTRYPOINTS)).
    const RPC_METHODS: &'static [&'static str];
    /// Its event handler entrypoints.
    const EVENT_HANDLERS: &'static [EventHandlerSpec];
    /// Its timer entrypoints.
    const TIMERS: &'static [TimerSpec] = &[];
    /// Whether its RPC entrypoints answer on the WebSocket hub
    /// (`#[service(name = "…", websocket)]`).
    const WEBSOCKET_RPC: bool = false;
    /// The version of the package that declares it (its `Cargo.toml`
    /// version, where `#[service]` expands); empty when unknown. The
    /// registry publishes it unless `SERVICE_VERSION` says otherwise.
    const VERSION: &'static str = "";

    /// The RPC entrypoint called `method`, if there is one: the one name
    /// lookup of a call.
    fn rpc_entrypoint(method: &str) -> Option<EntrypointId>;

    /// The name of entrypoint `id`.
    fn entrypoint_name(id: EntrypointId) -> &'static str {
        Self::ENTRYPOINTS
            .get(id.index())
            .copied()
            .unwrap_or("unknown")
    }

    /// Plugs what only this service's type knows into the runner's
    /// extensions, once an instance started: `#[service]` overrides it when
    /// the service has HTTP routes, to serve them on the web server.
    /// Generated code; not a public API.
    #[doc(hidden)]
    fn plug_in(plug_ins: &mut dyn std::any::Any)
    where
        Self: Sized,
    {
        let _ = plug_ins;
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

    /// Runs RPC entrypoint `id` with the request `payload`.
    fn dispatch_rpc(
        &self,
        id: EntrypointId,
        payload: Payload,
    ) -> impl Future<Output = Result<Payload, RemoteError>> + Send + '_;

    /// Whether `call` is the in-process hand-over
    /// ([`LocalCall`](crate::payload::LocalCall)) of RPC entrypoint `id`:
    /// its argument struct and its reply type.
    #[doc(hidden)]
    fn accepts_local(id: EntrypointId, call: &dyn Any) -> bool {
        let _ = (id, call);
        false
    }

    /// Runs RPC entrypoint `id` with the arguments of the in-process
    /// hand-over `call`, and puts the reply in it. Called only when
    /// [`accepts_local`](Self::accepts_local) said yes.
    #[doc(hidden)]
    fn dispatch_local<'a>(
        &'a self,
        id: EntrypointId,
        call: &'a mut (dyn Any + Send),
    ) -> impl Future<Output = Result<(), RemoteError>> + Send + 'a {
        let _ = call;
        async move { Err(RemoteError::method_not_found(Self::entrypoint_name(id))) }
    }

    /// Runs event handler `id` with the event `payload`.
    fn dispatch_event(
        &self,
        id: EntrypointId,
        payload: Value,
    ) -> impl Future<Output = Result<(), RemoteError>> + Send + '_;

    /// Runs timer entrypoint `id`.
    fn dispatch_timer(
        &self,
        id: EntrypointId,
    ) -> impl Future<Output = Result<(), RemoteError>> + Send + '_ {
        async move { Err(RemoteError::method_not_found(Self::entrypoint_name(id))) }
    }
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
