//! Clients: call any service by name with JSON, or through the typed client
//! `#[service]` generates for it.
//!
//! A client is a [dependency](crate::dependency): as a field of a service it
//! is bound to the service's transport when the service starts, and every
//! call it makes from an entrypoint carries that worker's context on. From
//! outside a service, take one from [`RunningServices::client`](crate::RunningServices::client).
//!
//! ```
//! # use shimeji::prelude::*;
//! # #[derive(Default, Dependencies)] struct Calculator;
//! # #[service(name = "calculator")]
//! # impl Calculator { #[rpc] async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use serde_json::json;
//! use std::time::Duration;
//!
//! let running = ServiceRunner::new().service(Calculator).start().await?;
//!
//! // Typed: arguments and result checked by the compiler.
//! let calc: CalculatorClient = running.client();
//! assert_eq!(calc.add(1, 2).await?, 3);
//!
//! // Dynamic: by name, keyword arguments as an object, positional as an array.
//! let client = running.dynamic_client();
//! assert_eq!(client.call("calculator", "add", json!({"a": 1, "b": 2})).await?, json!(3));
//! assert_eq!(client.call("calculator", "add", json!([1, 2])).await?, json!(3));
//!
//! // A timeout for one call.
//! let quick = client.with_timeout(Duration::from_millis(50));
//! assert_eq!(quick.call("calculator", "add", json!([1, 2])).await?, json!(3));
//! # running.stop().await; Ok(()) }
//! ```

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::context::{self, WorkerContext};
use crate::dependency::{Dependency, DependencyError, SetupContext};
use crate::error::CallError;
use crate::payload::{LocalCall, Payload, TypedValue};
use crate::transport::{Request, Transport};

struct Bound {
    transport: Arc<dyn Transport>,
    default_timeout: Duration,
}

/// Calls services by name. Cheap to clone; clones share their binding.
#[derive(Clone, Default)]
pub struct Client {
    bound: Arc<OnceLock<Bound>>,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.bound.get().map(|b| b.transport.name()))
            .field("timeout", &self.timeout())
            .finish()
    }
}

impl Client {
    /// A client bound to `transport`, with the default timeout `default_timeout`.
    pub fn new(transport: Arc<dyn Transport>, default_timeout: Duration) -> Self {
        let client = Client::default();
        client.bind(transport, default_timeout);
        client
    }

    /// Binds an unbound client; a bound client keeps its transport.
    pub fn bind(&self, transport: Arc<dyn Transport>, default_timeout: Duration) {
        let _ = self.bound.set(Bound {
            transport,
            default_timeout,
        });
    }

    /// A client like this one whose calls time out after `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Client {
            bound: self.bound.clone(),
            timeout: Some(timeout),
        }
    }

    /// The timeout this client's calls get.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .or_else(|| self.bound.get().map(|b| b.default_timeout))
            .unwrap_or(crate::config::DEFAULT_RPC_TIMEOUT)
    }

    /// Calls `service.method`. `args` is an object of keyword arguments, an
    /// array of positional ones, or `null` for none.
    pub async fn call(
        &self,
        service: impl Into<String>,
        method: impl Into<String>,
        args: Value,
    ) -> Result<Value, CallError> {
        let (args, kwargs) = match args {
            Value::Object(kwargs) => (Vec::new(), kwargs),
            Value::Array(args) => (args, Map::new()),
            Value::Null => (Vec::new(), Map::new()),
            other => {
                return Err(CallError::Encode(format!(
                    "arguments must be an object (keyword) or an array (positional), not {other}"
                )))
            }
        };
        self.call_with(service, method, args, kwargs).await
    }

    /// Calls `service.method` with positional and keyword arguments.
    pub async fn call_with(
        &self,
        service: impl Into<String>,
        method: impl Into<String>,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, CallError> {
        self.send(
            Cow::Owned(service.into()),
            Cow::Owned(method.into()),
            Payload::request(args, kwargs),
            None,
            context::current(),
        )
        .await?
        .into_json()
        .map_err(|e| CallError::Decode(e.to_string()))
    }

    /// Calls `service.method` with a typed argument struct and decodes the
    /// result as `R`. Generated clients use this; in-process it skips JSON.
    pub async fn call_typed<A, R>(
        &self,
        service: &'static str,
        method: &'static str,
        args: A,
    ) -> Result<R, CallError>
    where
        A: TypedValue,
        R: DeserializeOwned + 'static,
    {
        self.send(
            Cow::Borrowed(service),
            Cow::Borrowed(method),
            Payload::Typed(Box::new(args)),
            None,
            context::current(),
        )
        .await?
        .decode()
    }

    /// Like [`call_typed`](Self::call_typed), for a call site that keeps
    /// its metric handles: what generated clients use.
    ///
    /// When the service serves in this process, the arguments and the
    /// reply are handed over in place ([`LocalCall`]): nothing boxed, nothing
    /// serialized. Otherwise they go as a [`Payload`].
    #[doc(hidden)]
    pub async fn call_at<A, R>(&self, site: &'static CallSite, args: A) -> Result<R, CallError>
    where
        A: TypedValue,
        R: DeserializeOwned + Send + 'static,
    {
        let bound = self.bound()?;
        let mut local = LocalCall::<A, R>::new(args);
        let mut context = context::current();
        let mut serving = None;
        let Some(call) = bound.transport.call_local(
            site.service,
            site.method,
            &mut local,
            &mut serving,
            &mut context,
        ) else {
            return self.send_declined(site, local, context).await;
        };
        // Taken by the run; ended here so the waiting future does not hold it.
        drop(context);
        let (service, method) = (Cow::Borrowed(site.service), Cow::Borrowed(site.method));
        self.complete(bound, service, method, Some(site), call)
            .await?;
        local
            .take_reply()
            .ok_or_else(|| CallError::Decode("the service put no reply in place".into()))
    }

    /// Sends a typed call the in-process hand-over was declined for, as a
    /// payload. Boxed: a call that leaves the process pays for it, and the
    /// future of every typed call (which callers embed in theirs) stays
    /// small.
    fn send_declined<'a, A, R>(
        &'a self,
        site: &'static CallSite,
        mut local: LocalCall<A, R>,
        context: Option<WorkerContext>,
    ) -> BoxFuture<'a, Result<R, CallError>>
    where
        A: TypedValue,
        R: DeserializeOwned + Send + 'static,
    {
        Box::pin(async move {
            let args = local.take_args().ok_or_else(|| {
                CallError::Encode("the arguments were taken by a declined call".into())
            })?;
            self.send(
                Cow::Borrowed(site.service),
                Cow::Borrowed(site.method),
                Payload::Typed(Box::new(args)),
                Some(site),
                context,
            )
            .await?
            .decode()
        })
    }

    fn bound(&self) -> Result<&Bound, CallError> {
        self.bound.get().ok_or_else(|| {
            CallError::Transport(
                "client is not set up: make it a field of a service struct that derives \
                 `Dependencies`, or take one from `RunningServices::client`"
                    .into(),
            )
        })
    }

    async fn send(
        &self,
        service: Cow<'static, str>,
        method: Cow<'static, str>,
        payload: Payload,
        site: Option<&'static CallSite>,
        context: Option<WorkerContext>,
    ) -> Result<Payload, CallError> {
        let bound = self.bound()?;
        let request = Request {
            service: service.clone(),
            method: method.clone(),
            payload,
            context,
        };
        let call = bound.transport.call(request);
        self.complete(bound, service, method, site, call).await
    }

    /// Waits for `call` under the timeout and records it in the client's
    /// metrics.
    async fn complete<T>(
        &self,
        bound: &Bound,
        service: Cow<'static, str>,
        method: Cow<'static, str>,
        site: Option<&'static CallSite>,
        mut call: BoxFuture<'_, Result<T, CallError>>,
    ) -> Result<T, CallError> {
        let timeout = self.timeout.unwrap_or(bound.default_timeout);
        let measured = crate::metrics::is_enabled().then(|| {
            let started = crate::metrics::Instant::now();
            let handles = match site {
                Some(site) => *site
                    .metrics
                    .get_or_init(|| crate::metrics::call(&service, &method, (site.errors)())),
                None => crate::metrics::call(&service, &method, &[]),
            };
            (handles, started)
        });
        // A call that completes on its first poll (in-process, mostly) needs
        // no timer: arm the timeout only when the reply has to be waited for.
        // Hand-over protocol (see `metrics::handover`): the start reading is
        // offered, for this first poll only, to an in-process entrypoint that
        // runs within it; one that also ends within it observes the call for
        // both series.
        let first_poll = measured.map(|(_, started)| crate::metrics::handover::hand_over(started));
        let first = futures::poll!(&mut call);
        // Whether the entrypoint that served the call inline timed it for us
        // (hand-over); dropping `poll` ends the offer.
        let timed_for_us = first_poll.is_some_and(|poll| poll.end());
        let result = match first {
            std::task::Poll::Ready(result) => result,
            // The timer is boxed: only a call that waits pays for it, and
            // the future of every call (which callers embed in theirs)
            // stays small.
            std::task::Poll::Pending => {
                let deadline = Box::pin(tokio::time::sleep(timeout));
                match futures::future::select(call, deadline).await {
                    futures::future::Either::Left((result, _)) => result,
                    futures::future::Either::Right(_) => Err(CallError::Timeout {
                        service: service.into_owned(),
                        method: method.into_owned(),
                        timeout,
                    }),
                }
            }
        };
        if let Some((metrics, started)) = measured {
            let error = result.as_ref().err().map(CallError::exc_type);
            // Timed for us: only the outcome is ours to count (hand-over).
            let nanos =
                (!timed_for_us).then(|| crate::metrics::Instant::now().nanos_since(started));
            metrics.record(nanos, error);
        }
        result
    }
}

impl Dependency for Client {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        self.bind(ctx.transport().clone(), ctx.config().rpc_timeout());
        Box::pin(async { Ok(()) })
    }
}

/// One method of a generated client: its names and, once resolved, its
/// metric handles.
#[doc(hidden)]
pub struct CallSite {
    service: &'static str,
    method: &'static str,
    /// The error types the method declares: its outcome labels.
    errors: fn() -> &'static [&'static str],
    metrics: OnceLock<&'static crate::metrics::CallMetrics>,
}

fn no_errors() -> &'static [&'static str] {
    &[]
}

impl CallSite {
    /// A call site of `service.method`.
    pub const fn new(service: &'static str, method: &'static str) -> Self {
        CallSite {
            service,
            method,
            errors: no_errors,
            metrics: OnceLock::new(),
        }
    }

    /// A call site of `service.method`, a method that declares the error
    /// types `errors` gives (see
    /// [`Exception::declared_types`](crate::Exception::declared_types)).
    pub const fn with_errors(
        service: &'static str,
        method: &'static str,
        errors: fn() -> &'static [&'static str],
    ) -> Self {
        CallSite {
            service,
            method,
            errors,
            metrics: OnceLock::new(),
        }
    }
}

/// A typed client generated by `#[service]`. Lets code take any service's
/// client from a [`Client`].
pub trait ServiceClient: From<Client> + Clone + Send + Sync + 'static {
    /// The name of the service this client calls.
    const SERVICE: &'static str;
    /// The untyped client underneath.
    fn client(&self) -> &Client;
}
