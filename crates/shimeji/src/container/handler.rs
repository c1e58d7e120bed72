//! The container as the transports see it: a [`ServiceHandler`].
//!
//! An RPC request names its method: the name is resolved to an
//! [`EntrypointId`](crate::entrypoint::EntrypointId) here, once. An event
//! arrives on a handler's own queue, so its spec (and id) is known already.

use futures::future::BoxFuture;
use serde_json::Value;

use super::Container;
use crate::context::WorkerContext;
use crate::entrypoint::EventHandlerSpec;
use crate::error::RemoteError;
use crate::payload::Payload;
use crate::service::Service;
use crate::transport::{HandlerError, ServiceHandler};

impl<S: Service> ServiceHandler for Container<S> {
    fn handle_rpc<'a>(
        &'a self,
        method: &'a str,
        payload: Payload,
        caller: Option<WorkerContext>,
    ) -> BoxFuture<'a, Result<Payload, HandlerError>> {
        Box::pin(async move {
            let Some(id) = S::rpc_entrypoint(method) else {
                return Err(HandlerError::Failed(RemoteError::method_not_found(method)));
            };
            self.run(id, caller, move |svc| svc.dispatch_rpc(id, payload))
                .await
        })
    }

    fn handle_event(
        &self,
        handler: &'static EventHandlerSpec,
        payload: Value,
        caller: Option<WorkerContext>,
    ) -> BoxFuture<'_, Result<(), HandlerError>> {
        let id = handler.id;
        Box::pin(self.run(id, caller, move |svc| svc.dispatch_event(id, payload)))
    }
}
