//! How a service's HTTP routes reach its container: the web server calls
//! the container, which runs the entrypoint as a worker like any other
//! (permit, context, hooks, panic guard) and turns what went wrong into a
//! response.

use axum::http::StatusCode;
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;

use super::{error_body, Request, Response, REQUEST_ID_HEADER};
use crate::container::Container;
use crate::entrypoint::EntrypointId;
use crate::extension::ServicePlugIns;
use crate::service::Service;
use crate::transport::HandlerError;

/// The HTTP side of a service: what `#[service]` generates for a service
/// with `#[http]` methods. Not meant to be implemented by hand.
pub trait HttpService: Service {
    /// Its HTTP entrypoints.
    const HTTP_ROUTES: &'static [super::HttpRouteSpec];

    /// Runs HTTP entrypoint `id` for `request`.
    fn dispatch_http(
        &self,
        id: EntrypointId,
        request: Request,
    ) -> impl Future<Output = Response> + Send + '_;
}

/// What serves a service's HTTP routes: its container.
pub(crate) trait HttpHandler: Send + Sync {
    /// Runs HTTP entrypoint `id` for `request`.
    fn handle(&self, id: EntrypointId, request: Request) -> BoxFuture<'_, Response>;
}

impl<S: HttpService> HttpHandler for Container<S> {
    fn handle(&self, id: EntrypointId, request: Request) -> BoxFuture<'_, Response> {
        Box::pin(async move {
            let (caller, request_id) = super::edge_context(request.headers());
            let ran = self
                .run(id, Some(caller), move |svc| async move {
                    Ok(svc.dispatch_http(id, request).await)
                })
                .await;
            let mut response = match ran {
                Ok(response) => {
                    // A 5xx is a failed run, whatever made it.
                    if response.status().is_server_error() {
                        let exc_type = response
                            .extensions()
                            .get::<super::FailedWith>()
                            .map_or(crate::metrics::HTTP_SERVER_ERROR, |f| f.0.as_str());
                        self.count_failure(id, exc_type);
                    }
                    response
                }
                Err(HandlerError::Stopping) => error_body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "the service is stopping",
                ),
                Err(HandlerError::Failed(e)) => {
                    let name = S::entrypoint_name(id);
                    tracing::error!(service = S::NAME, entrypoint = name, error = %e, "HTTP entrypoint failed");
                    error_body(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalServerError",
                        "internal server error",
                    )
                }
            };
            response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
            response
        })
    }
}

/// Serves the HTTP routes of a service instance that started on its
/// runner's web server (the first instance of a service serves them).
/// Called by the `Service::plug_in` that `#[service]` generates.
/// The routes of a started service instance, as its own type plugs them
/// in for the web server (see [`ServicePlugIns`]).
pub(crate) struct WebRoutes {
    pub(crate) service: &'static str,
    pub(crate) routes: &'static [super::HttpRouteSpec],
    pub(crate) handler: Arc<dyn HttpHandler>,
}

/// `Service::plug_in` of a service with HTTP routes (generated code).
#[doc(hidden)]
pub fn plug_in<S: HttpService>(plug_ins: &mut dyn std::any::Any) {
    if let Some(plug_ins) = plug_ins.downcast_mut::<ServicePlugIns<S>>() {
        let handler: Arc<dyn HttpHandler> = plug_ins.container().clone();
        plug_ins.add(WebRoutes {
            service: S::NAME,
            routes: S::HTTP_ROUTES,
            handler,
        });
    }
}
