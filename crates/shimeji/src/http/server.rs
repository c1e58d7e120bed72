//! The one web server a runner shares between its services: their HTTP
//! routes, and the WebSocket hub on `/ws`. It is a runner extension: it
//! learns each service as it starts, and listens once all have.

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode};
use axum::routing::{get, on, MethodFilter};
use axum::Router;
use futures::future::BoxFuture;
use std::any::Any;
use std::sync::Arc;

use super::handler::HttpHandler;
use super::hub::Hub;
use super::listener::Listening;
use super::socket::{upgrade, WsState};
use super::{error_body, HttpRouteSpec, Request};
use crate::client::Client;
use crate::config::{Config, ConfigError};
use crate::container::StartError;
use crate::dependency::Extensions;
use crate::extension::{RunnerExtension, ServiceInfo, Shared};

/// What bounds the web server: request bodies and WebSockets (see the
/// [hub's docs](super::WebSocketHub) for the keys).
#[derive(Debug, Clone)]
pub(crate) struct WebLimits {
    /// `max_body_size`.
    pub(crate) max_body: usize,
    /// `websocket_max_message_size`.
    pub(crate) max_message: usize,
    /// `websocket_max_in_flight`.
    pub(crate) max_in_flight: usize,
    /// `websocket_send_queue`.
    pub(crate) send_queue: usize,
    /// `websocket_allowed_origins`; `None`: any.
    pub(crate) allowed_origins: Option<Vec<String>>,
}

impl WebLimits {
    /// The limits `config` sets, each at least 1.
    pub(crate) fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let at_least_one = |key: &str, default: usize| -> Result<usize, ConfigError> {
            match config.get::<usize>(key)?.unwrap_or(default) {
                0 => Err(ConfigError {
                    key: key.into(),
                    message: "must be at least 1".into(),
                }),
                n => Ok(n),
            }
        };
        let max_body = at_least_one("max_body_size", super::DEFAULT_MAX_BODY_SIZE)?;
        Ok(WebLimits {
            max_body,
            max_message: at_least_one("websocket_max_message_size", max_body)?,
            max_in_flight: at_least_one(
                "websocket_max_in_flight",
                super::DEFAULT_WEBSOCKET_MAX_IN_FLIGHT,
            )?,
            send_queue: at_least_one("websocket_send_queue", super::DEFAULT_WEBSOCKET_SEND_QUEUE)?,
            allowed_origins: config.get::<Vec<String>>("websocket_allowed_origins")?,
        })
    }
}

/// The routes and WebSocket services a runner collected.
/// The routes and WebSocket services a runner collected.
#[derive(Default)]
pub(crate) struct WebApp {
    routes: Vec<(&'static str, HttpRouteSpec, Arc<dyn HttpHandler>)>,
    websocket_services: Vec<&'static str>,
}

impl WebApp {
    pub(crate) fn add_routes(
        &mut self,
        service: &'static str,
        routes: &'static [HttpRouteSpec],
        handler: Arc<dyn HttpHandler>,
    ) {
        // Several instances of one service: the first serves HTTP.
        if self.routes.iter().any(|(s, _, _)| *s == service) {
            return;
        }
        for spec in routes {
            self.routes.push((service, *spec, handler.clone()));
        }
    }

    pub(crate) fn add_websocket_service(&mut self, service: &'static str) {
        if !self.websocket_services.contains(&service) {
            self.websocket_services.push(service);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.websocket_services.is_empty()
    }

    /// What it serves: each route's service, method and path template, and
    /// the services whose RPC answers on `/ws`.
    fn served(&self) -> Served {
        Served {
            routes: self
                .routes
                .iter()
                .map(|(service, spec, _)| (*service, spec.method, spec.path))
                .collect(),
            websocket: self.websocket_services.clone(),
        }
    }

    fn router(self, hub: Arc<Hub>, client: Client, limits: WebLimits) -> Result<Router, String> {
        let mut seen: Vec<(&str, &str, &str)> = Vec::new();
        let mut router = Router::new();
        for (service, spec, handler) in self.routes {
            if let Some((_, _, other)) = seen
                .iter()
                .find(|(m, p, _)| *m == spec.method && *p == spec.path)
            {
                return Err(format!(
                    "route {} {} is declared by both `{other}` and `{service}.{}`",
                    spec.method, spec.path, spec.name
                ));
            }
            seen.push((spec.method, spec.path, service));
            let method = Method::from_bytes(spec.method.as_bytes()).map_err(|e| e.to_string())?;
            let filter = MethodFilter::try_from(method).map_err(|e| e.to_string())?;
            let id = spec.id;
            let route = on(filter, move |request: Request| {
                let handler = handler.clone();
                async move { handler.handle(id, request).await }
            });
            let path = spec.path;
            router = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || router.route(path, route)))
                .map_err(|_| format!("route `{path}` of `{service}` is not a valid path (write parameters as `{{name}}`)"))?;
        }
        if !self.websocket_services.is_empty() {
            let state = Arc::new(WsState {
                hub,
                client,
                services: self.websocket_services,
                limits: limits.clone(),
            });
            router = router.route("/ws", get(upgrade).with_state(state));
        }
        Ok(router
            .fallback(|method: Method, uri: axum::http::Uri| async move {
                error_body(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("no route for {method} {}", uri.path()),
                )
            })
            .layer(axum::middleware::map_response(json_method_not_allowed))
            .layer(DefaultBodyLimit::max(limits.max_body)))
    }
}

/// The router's own 405 (a route with other methods) gets a JSON body like
/// every other error, and keeps its `Allow` header. A 405 an entrypoint
/// returns with a body of its own is left alone.
async fn json_method_not_allowed(response: axum::response::Response) -> axum::response::Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        return response;
    }
    let mut json = error_body(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the route does not take this method",
    );
    if let Some(allow) = response.headers().get(axum::http::header::ALLOW) {
        json.headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    json
}

/// What a web server serves, as the registry publishes it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Served {
    /// `(service, method, path template)` of every route.
    pub(crate) routes: Vec<(&'static str, &'static str, &'static str)>,
    /// The services whose RPC entrypoints answer on `/ws`.
    pub(crate) websocket: Vec<&'static str>,
}

/// The web server of a runner: it serves when a service has HTTP or
/// WebSocket entrypoints, on `WEB_SERVER_ADDRESS`.
#[derive(Default)]
pub(crate) struct WebServer {
    app: WebApp,
    /// What it serves, once started.
    served: Served,
    /// The runner's WebSocket hub, which services reach through their
    /// [`WebSocketHub`](super::WebSocketHub) fields.
    hub: Arc<Hub>,
    listening: Option<Listening>,
}

impl WebServer {
    /// Serves `routes` of `service` with `handler`.
    pub(crate) fn add_routes(
        &mut self,
        service: &'static str,
        routes: &'static [HttpRouteSpec],
        handler: Arc<dyn HttpHandler>,
    ) {
        self.app.add_routes(service, routes, handler);
    }
}

impl RunnerExtension for WebServer {
    fn open<'a>(
        &'a mut self,
        _runner: &'a Shared,
        values: &'a mut Extensions,
    ) -> BoxFuture<'a, Result<(), StartError>> {
        values.insert(self.hub.clone());
        Box::pin(async { Ok(()) })
    }

    fn service_started(&mut self, service: &ServiceInfo<'_>) {
        if let Some(web) = service.plug::<super::handler::WebRoutes>() {
            self.add_routes(web.service, web.routes, web.handler.clone());
        }
        if service.websocket_rpc {
            self.app.add_websocket_service(service.name);
        }
    }

    fn start<'a>(&'a mut self, runner: &'a Shared) -> BoxFuture<'a, Result<(), StartError>> {
        Box::pin(async move {
            let app = std::mem::take(&mut self.app);
            if app.is_empty() {
                return Ok(());
            }
            let served = app.served();
            let config = &runner.config;
            let address = config
                .get::<String>("WEB_SERVER_ADDRESS")?
                .unwrap_or_else(|| super::DEFAULT_WEB_SERVER_ADDRESS.to_string());
            let limits = WebLimits::from_config(config)?;
            let router = app
                .router(self.hub.clone(), runner.client(), limits)
                .map_err(StartError::Routes)?;
            self.listening = Some(Listening::serve("web server", &address, router).await?);
            self.served = served;
            Ok(())
        })
    }

    fn draining(&mut self) {
        if let Some(listening) = &self.listening {
            listening.stop_accepting();
        }
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        super::listener::stop(&mut self.listening)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl WebServer {
    /// The address it listens on, once started.
    pub(crate) fn address(&self) -> Option<std::net::SocketAddr> {
        super::listener::address_of(&self.listening)
    }

    /// What it serves (nothing before it started, or when it serves nothing).
    pub(crate) fn served(&self) -> &Served {
        &self.served
    }
}
