//! The container as the transports see it: a [`ServiceHandler`].
//!
//! An RPC request names its method: the name is resolved to an
//! [`EntrypointId`](crate::entrypoint::EntrypointId) here, once. An event
//! arrives on a handler's own queue, so its spec (and id) is known already.

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use std::any::Any;

use super::Container;
use crate::context::WorkerContext;
use crate::entrypoint::EventHandlerSpec;
use crate::error::{CallError, RemoteError};
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
        // The name is resolved before the run's future is made, and that
        // future is boxed as it is: no async block around it to move it.
        let Some(id) = S::rpc_entrypoint(method) else {
            let error = RemoteError::method_not_found(method);
            return Box::pin(std::future::ready(Err(HandlerError::Failed(error))));
        };
        Box::pin(self.run(id, caller, move |svc| svc.dispatch_rpc(id, payload)))
    }

    fn handle_local<'a>(
        &'a self,
        method: &'a str,
        call: &'a mut (dyn Any + Send),
        caller: &mut Option<WorkerContext>,
    ) -> Option<BoxFuture<'a, Result<(), CallError>>> {
        // An unknown method or another hand-over type goes the usual way,
        // which reports it.
        let id = S::rpc_entrypoint(method).filter(|id| S::accepts_local(*id, call))?;
        let run = self.run(id, caller.take(), move |svc| svc.dispatch_local(id, call));
        Some(Box::pin(run.map(|result| {
            result.map_err(|e| CallError::from_remote(e.into_remote(S::NAME)))
        })))
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
