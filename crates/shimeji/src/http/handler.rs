//! How a service's HTTP routes reach its container.

use futures::future::BoxFuture;
use std::sync::Arc;

use super::server::WebServer;
use super::{Request, Response};
use crate::entrypoint::EntrypointId;
use crate::runner::PlugIns;
use crate::service::Service;

/// What serves a service's HTTP routes: its container.
pub(crate) trait HttpHandler: Send + Sync {
    /// Runs HTTP entrypoint `id` for `request`.
    fn handle(&self, id: EntrypointId, request: Request) -> BoxFuture<'_, Response>;
}

/// Serves the HTTP routes of a service instance that started on its
/// runner's web server.
pub(crate) fn plug_in<S: Service>(plug_ins: &mut PlugIns<'_, S>) {
    if S::HTTP_ROUTES.is_empty() {
        return;
    }
    let handler: Arc<dyn HttpHandler> = plug_ins.container().clone();
    if let Some(web) = plug_ins.extension_mut::<WebServer>() {
        web.add_routes(S::NAME, S::HTTP_ROUTES, handler);
    }
}
