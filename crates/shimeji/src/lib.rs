//! # shimeji
//!
//! Microservices for Rust, on Nameko's model: a service is a struct with a
//! name; its methods become entrypoints by attribute; its dependencies are
//! fields the container manages and tests replace; a call id stack follows
//! every request through the fleet.
//!
//! ```
//! use shimeji::prelude::*;
//!
//! #[derive(Default, Dependencies)]
//! struct Greeter {
//!     events: EventDispatcher,
//! }
//!
//! #[service(name = "greeter")]
//! impl Greeter {
//!     /// Greets someone and tells the world.
//!     #[rpc]
//!     async fn hello(&self, name: String) -> Result<String, DispatchError> {
//!         self.events.dispatch("greeted", serde_json::json!({ "name": name })).await?;
//!         Ok(format!("Hello, {name}!"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let running = ServiceRunner::new().service(Greeter::default()).start().await?;
//! let greeter: GreeterClient = running.client();
//! assert_eq!(greeter.hello("Ada".into()).await?, "Hello, Ada!");
//! running.stop().await;
//! # Ok(()) }
//! ```
//!
//! Where to look:
//!
//! | module | holds |
//! |---|---|
//! | [`service`](mod@service) | what `#[service]` generates, service descriptions |
//! | [`client`] | typed and dynamic clients, timeouts |
//! | [`events`] | dispatching events; handler types |
//! | [`dependency`] | the dependency trait and its hooks |
//! | [`context`] | worker context: call ids, call id stack, context data |
//! | [`trace`] | W3C trace context carried across hops |
//! | [`metrics`] | Prometheus metrics of every entrypoint, client and transport |
//! | `otlp` | OpenTelemetry span export over OTLP/HTTP (feature `otlp`) |
//! | [`health`] | liveness and readiness |
//! | [`registry`] | the service registry: instances, their routes, leases; etcd with feature `etcd` |
//! | `logging` | text and JSON log lines with the worker's call id (feature `cli`) |
//! | [`container`] | one running instance: concurrency, draining |
//! | [`runner`] | starting a set of services, signals, entrypoint waiters |
//! | [`transport`] | the transport trait and the embedded memory transport |
//! | [`error`] | remote errors and call errors |
//! | [`config`] | configuration keys |
//! | `testing` | test helpers (feature `testing`) |

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod arguments;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
pub mod client;
pub mod config;
pub mod container;
pub mod context;
pub mod dependency;
pub mod entrypoint;
pub mod error;
pub mod events;
mod extension;
pub mod health;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
pub mod inject;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod logging;
pub mod metrics;
#[cfg(feature = "otlp")]
#[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
pub mod otlp;
pub mod payload;
pub mod registry;
pub mod runner;
pub mod service;
mod sync;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod trace;
pub mod transport;

pub use client::{Client, ServiceClient};
pub use config::Config;
pub use container::{Finished, StartError};
pub use context::{spawn, WorkerContext};
pub use dependency::{Dependencies, Dependency};
pub use error::{CallError, Exception, RemoteError};
pub use events::{DispatchError, EventDispatcher};
pub use inject::{ServiceConfig, Settings};
pub use runner::{EntrypointWaiter, RunningServices, ServiceRunner};
pub use service::{HandlerType, Service, ServiceDescription};

/// Turns an `impl` block into a service. See the [crate docs](crate) and [`service`](mod@service).
///
/// `#[service(name = "…", events = ["…"])]` on an `impl` block; inside it,
/// `#[rpc]` on async methods,
/// `#[event_handler("source", "event_type", handler_type = "service_pool" | "singleton" | "broadcast", reliable_delivery = true)]`
/// on async methods that take the event payload, and
/// `#[timer(interval = "5s", eager = false)]` on async methods that take
/// nothing (intervals in `ms`, `s`, `m` or `h`; runs never overlap: a tick
/// that comes while a run is still going is skipped).
///
/// The struct derives [`Dependencies`](trait@Dependencies), a struct without
/// dependency fields too; `#[http]` needs the `http` feature.
pub use shimeji_macros::service;

/// Lists the dependency fields of a service struct. See [`dependency`].
pub use shimeji_macros::Dependencies;

/// Implements [`Exception`] for an error type. See [`error`].
pub use shimeji_macros::Exception;

/// What a service module needs in scope.
pub mod prelude {
    pub use crate::dependency::{BoxFuture, DependencyError, SetupContext};
    pub use crate::{
        service, CallError, Client, Config, Dependencies, Dependency, DispatchError,
        EventDispatcher, Exception, HandlerType, RemoteError, RunningServices, Service,
        ServiceClient, ServiceConfig, ServiceRunner, StartError, WorkerContext,
    };
}

#[doc(hidden)]
pub mod __private {
    //! Used by generated code; not a public API.
    pub use crate::__http_plug_in as http_plug_in;
    pub use crate::__require_http_feature as require_http_feature;
    pub use crate::arguments::Binder;
    pub use crate::client::CallSite;
    pub use crate::dependency::probe;
    pub use crate::entrypoint::EntrypointId;
    pub use crate::payload::{LocalCall, Payload};
    pub use crate::service::{
        ArgDescription, EventHandlerDescription, EventHandlerSpec, RpcDescription,
        TimerDescription, TimerSpec,
    };
    pub use futures::future::BoxFuture;
    pub use serde;
    pub use serde_json;
}

/// Wraps the items `#[service]` generates for `#[http]` entrypoints: they
/// stay as they are with the `http` feature, and become one clear error
/// without it (instead of errors about the shape of `Service`).
#[cfg(feature = "http")]
#[doc(hidden)]
#[macro_export]
macro_rules! __require_http_feature {
    ($($items:tt)*) => {
        $($items)*
    };
}

/// Wraps the items `#[service]` generates for `#[http]` entrypoints: they
/// stay as they are with the `http` feature, and become one clear error
/// without it (instead of errors about the shape of `Service`).
#[cfg(not(feature = "http"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __require_http_feature {
    ($($items:tt)*) => {
        ::core::compile_error!(
            "`#[http]` needs shimeji's `http` feature: turn it on in Cargo.toml, e.g. `shimeji = { version = \"0.1\", features = [\"http\"] }` (it is one of the default features)"
        );
    };
}

/// `Service::plug_in` of a service with `#[http]` entrypoints (generated
/// code): hands its routes to the runner's web server. Nothing without the
/// `http` feature, where `require_http_feature!` reports the one error.
#[cfg(feature = "http")]
#[doc(hidden)]
#[macro_export]
macro_rules! __http_plug_in {
    () => {
        fn plug_in(plug_ins: &mut dyn ::core::any::Any) {
            $crate::http::__plug_in::<Self>(plug_ins)
        }
    };
}

/// See the `http` feature's version of this macro.
#[cfg(not(feature = "http"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __http_plug_in {
    () => {};
}
