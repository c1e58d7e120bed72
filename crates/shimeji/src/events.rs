//! Events: dispatch from one service, handle in others.
//!
//! A service dispatches with an [`EventDispatcher`] field; another handles
//! with `#[event_handler(source, event_type)]`. Delivery follows Nameko's
//! handler types ([`HandlerType`](crate::HandlerType)): `service_pool` (one
//! instance of each handling service), `singleton` (one instance in the
//! cluster), `broadcast` (every instance).
//!
//! ```
//! use shimeji::prelude::*;
//! use serde::Deserialize;
//!
//! #[derive(Default, Dependencies)]
//! struct Accounts {
//!     events: EventDispatcher,
//! }
//!
//! #[service(name = "accounts")]
//! impl Accounts {
//!     #[rpc]
//!     async fn create(&self, name: String) -> Result<(), DispatchError> {
//!         self.events.dispatch("user_created", serde_json::json!({ "name": name })).await
//!     }
//! }
//!
//! #[derive(Deserialize)]
//! struct UserCreated {
//!     name: String,
//! }
//!
//! #[derive(Default, Dependencies)]
//! struct Mailer;
//!
//! #[service(name = "mailer")]
//! impl Mailer {
//!     #[event_handler("accounts", "user_created", handler_type = "broadcast")]
//!     async fn welcome(&self, user: UserCreated) {
//!         tracing::info!("welcome, {}", user.name);
//!     }
//! }
//! ```

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};

use crate::context;
use crate::dependency::{Dependency, DependencyError, SetupContext};
use crate::transport::{Event, Transport, TransportError};

/// A failure to publish an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The dispatcher is not set up: it is not a field of a running service.
    #[error("the event dispatcher is not set up: make it a field of a service struct that derives `Dependencies`, and start the service")]
    NotSetUp,
    /// The payload could not be encoded as JSON.
    #[error("could not encode the event payload: {0}")]
    Encode(#[from] serde_json::Error),
    /// The transport failed to publish it.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

crate::error::shimeji_exception! {
    DispatchError => "DispatchError",
}

/// A failed dispatch inside an entrypoint passes on as a remote error.
impl From<DispatchError> for crate::error::RemoteError {
    fn from(error: DispatchError) -> Self {
        crate::error::Exception::to_remote(&error)
    }
}

/// An event a recording dispatcher kept: its type and payload.
type Recorded = (String, Value);

/// Where a dispatcher publishes: its service (the events' source) and the
/// transport, known once the service has started.
struct DispatchTarget {
    source: &'static str,
    transport: Arc<dyn Transport>,
}

/// Dispatches events as the service it belongs to (Nameko's `EventDispatcher`).
///
/// Events carry the dispatching worker's context: its call id joins the
/// `call_id_stack` and its context data goes along.
#[derive(Clone, Default)]
pub struct EventDispatcher {
    target: Arc<OnceLock<DispatchTarget>>,
    recorded: Option<Arc<Mutex<Vec<Recorded>>>>,
}

impl EventDispatcher {
    /// A dispatcher bound to `transport` that dispatches as service `source`.
    pub fn new(source: &'static str, transport: Arc<dyn Transport>) -> Self {
        let dispatcher = EventDispatcher::default();
        dispatcher.bind(source, transport);
        dispatcher
    }

    fn bind(&self, source: &'static str, transport: Arc<dyn Transport>) {
        let _ = self.target.set(DispatchTarget { source, transport });
    }

    /// A dispatcher that records events instead of publishing them, for tests.
    ///
    /// ```
    /// # tokio_test_block(async {
    /// let events = shimeji::EventDispatcher::recording();
    /// events.dispatch("greeted", serde_json::json!({"name": "Ada"})).await.unwrap();
    /// assert_eq!(events.recorded(), vec![("greeted".to_string(), serde_json::json!({"name": "Ada"}))]);
    /// # });
    /// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub fn recording() -> Self {
        EventDispatcher {
            target: Arc::default(),
            recorded: Some(Arc::default()),
        }
    }

    /// The events a [`recording`](Self::recording) dispatcher recorded, in order.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Dispatches event `event_type` with `payload`.
    pub async fn dispatch(
        &self,
        event_type: impl Into<Cow<'static, str>>,
        payload: impl Serialize,
    ) -> Result<(), DispatchError> {
        let payload = serde_json::to_value(payload)?;
        if let Some(recorded) = &self.recorded {
            recorded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((event_type.into().into_owned(), payload));
            return Ok(());
        }
        let target = self.target.get().ok_or(DispatchError::NotSetUp)?;
        let event_type = event_type.into();
        if crate::metrics::is_enabled() {
            crate::metrics::event_dispatched(target.source, &event_type);
        }
        target
            .transport
            .publish(Event {
                source: Cow::Borrowed(target.source),
                event_type,
                payload,
                context: context::current(),
            })
            .await?;
        Ok(())
    }
}

impl Dependency for EventDispatcher {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        self.bind(ctx.service(), ctx.transport().clone());
        Box::pin(async { Ok(()) })
    }
}
