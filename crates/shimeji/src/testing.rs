//! Test helpers (feature `testing`).
//!
//! * [`worker`]: one service instance with the dependencies you give it —
//!   Nameko's `worker_factory`. The service struct is plain data, so a
//!   replaced dependency is just another value in its field:
//!   [`EventDispatcher::recording`](crate::EventDispatcher::recording),
//!   [`stub_client`], [`ServiceConfig::with`](crate::ServiceConfig::with),
//!   or your own test double.
//! * A test cluster is a [`ServiceRunner`] with the services under test;
//!   [`RunningServices::client`] gives typed clients.
//! * [`RunningServices::entrypoint_waiter`] waits until an entrypoint has
//!   finished handling something — Nameko's `entrypoint_waiter`.
//!
//! ```
//! use shimeji::prelude::*;
//! use shimeji::testing;
//!
//! #[derive(Default, Dependencies)]
//! struct Greeter {
//!     events: EventDispatcher,
//! }
//!
//! #[service(name = "greeter")]
//! impl Greeter {
//!     #[rpc]
//!     async fn hello(&self, name: String) -> Result<String, DispatchError> {
//!         self.events.dispatch("greeted", serde_json::json!({ "name": name })).await?;
//!         Ok(format!("Hello, {name}!"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let worker = testing::worker(Greeter { events: EventDispatcher::recording() }).await?;
//! let reply = worker.client::<GreeterClient>().hello("Ada".into()).await?;
//! assert_eq!(reply, "Hello, Ada!");
//! assert_eq!(worker.service().events.recorded()[0].0, "greeted");
//! # Ok(()) }
//! ```

use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;

use crate::client::{Client, ServiceClient};
use crate::config::{Config, DEFAULT_RPC_TIMEOUT};
use crate::container::StartError;
use crate::error::{CallError, RemoteError};
use crate::payload::Payload;
use crate::runner::{RunningServices, ServiceRunner};
use crate::service::Service;
use crate::transport::{Endpoint, Event, Request, Serving, Transport, TransportError};

/// One running service instance for a test, with access to the service
/// struct (its replaced dependencies). [`worker`] starts one.
pub struct TestInstance<S> {
    running: RunningServices,
    service: Arc<S>,
}

/// Starts one instance of `service` on its own memory transport, with the
/// default configuration.
pub async fn worker<S: Service>(service: S) -> Result<TestInstance<S>, StartError> {
    worker_with_config(service, Config::new()).await
}

/// Like [`worker`], with a configuration.
pub async fn worker_with_config<S: Service>(
    service: S,
    config: Config,
) -> Result<TestInstance<S>, StartError> {
    let service = Arc::new(service);
    let running = ServiceRunner::with_config(config)
        .service_arc(service.clone())
        .start()
        .await?;
    Ok(TestInstance { running, service })
}

impl<S: Service> TestInstance<S> {
    /// The service struct, to look at its (test) dependencies.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// A typed client for the service (or any other on the same transport).
    pub fn client<C: ServiceClient>(&self) -> C {
        self.running.client()
    }

    /// Calls one of the service's entrypoints by name with JSON arguments.
    pub async fn call(&self, method: &str, args: Value) -> Result<Value, CallError> {
        self.running
            .dynamic_client()
            .call(S::NAME, method, args)
            .await
    }

    /// The running instance (for waiters, dispatchers, the transport).
    pub fn running(&self) -> &RunningServices {
        &self.running
    }

    /// Stops the instance.
    pub async fn stop(self) {
        self.running.stop().await
    }
}

type StubFn = dyn Fn(&str, Value) -> Result<Value, RemoteError> + Send + Sync;

struct StubTransport {
    service: &'static str,
    answer: Box<StubFn>,
}

impl Transport for StubTransport {
    fn name(&self) -> &'static str {
        "stub"
    }

    fn call(&self, request: Request) -> BoxFuture<'_, Result<Payload, CallError>> {
        Box::pin(async move {
            if request.service != self.service {
                return Err(CallError::UnknownService(request.service.into_owned()));
            }
            let body = request
                .payload
                .into_request_json()
                .map_err(|e| CallError::Encode(e.to_string()))?;
            (self.answer)(&request.method, body)
                .map(Payload::Json)
                .map_err(CallError::from_remote)
        })
    }

    fn publish(&self, _event: Event) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }

    fn serve(&self, _binding: Endpoint) -> BoxFuture<'_, Result<Serving, TransportError>> {
        Box::pin(async {
            Err(TransportError::Other(
                "a stub client's transport cannot serve services".into(),
            ))
        })
    }
}

/// A typed client whose calls `answer` handles: it gets the method name and
/// the request body (`{"args": [...], "kwargs": {...}}`) and returns the
/// result as JSON, or a remote error.
///
/// ```
/// # use shimeji::prelude::*;
/// # #[derive(Default, Dependencies)] struct Payments;
/// # #[service(name = "payments")]
/// # impl Payments { #[rpc] async fn charge(&self, amount: u64) -> bool { amount > 0 } }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let payments: PaymentsClient = shimeji::testing::stub_client(|method, body| {
///     assert_eq!(method, "charge");
///     Ok(serde_json::json!(body["kwargs"]["amount"].as_u64() < Some(100)))
/// });
/// assert!(payments.charge(42).await.unwrap());
/// # }
/// ```
pub fn stub_client<C: ServiceClient>(
    answer: impl Fn(&str, Value) -> Result<Value, RemoteError> + Send + Sync + 'static,
) -> C {
    let transport = StubTransport {
        service: C::SERVICE,
        answer: Box::new(answer),
    };
    C::from(Client::new(Arc::new(transport), DEFAULT_RPC_TIMEOUT))
}
