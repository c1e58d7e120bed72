//! The one web server a runner shares between its services.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, on, MethodFilter};
use axum::Router;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::hub::{event_frame, Hub};
use super::{error_body, HttpRouteSpec, Request, Response};
use crate::client::Client;
use crate::context::{self, WorkerContext};
use crate::error::RemoteError;

/// What serves a service's HTTP routes: its container.
pub(crate) trait HttpHandler: Send + Sync {
    fn handle(&self, name: &'static str, request: Request) -> BoxFuture<'_, Response>;
}

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

    fn router(self, hub: Arc<Hub>, client: Client, max_body: usize) -> Result<Router, String> {
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
            let name = spec.name;
            let route = on(filter, move |request: Request| {
                let handler = handler.clone();
                async move { handler.handle(name, request).await }
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
            .layer(DefaultBodyLimit::max(max_body)))
    }
}

/// Starts the server; it stops taking connections when `shutdown` is
/// cancelled and finishes the requests in flight.
pub(crate) async fn serve(
    app: WebApp,
    address: &str,
    max_body: usize,
    hub: Arc<Hub>,
    client: Client,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let router = app.router(hub, client, max_body)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on WEB_SERVER_ADDRESS {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(address = %local, "web server listening");
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "web server failed");
        }
    });
    Ok((local, task))
}

struct WsState {
    hub: Arc<Hub>,
    client: Client,
    services: Vec<&'static str>,
}

async fn upgrade(ws: WebSocketUpgrade, State(state): State<Arc<WsState>>) -> Response {
    ws.on_upgrade(move |socket| run_socket(socket, state))
}

fn result_frame(correlation_id: &Value, outcome: Result<Value, RemoteError>) -> String {
    match outcome {
        Ok(data) => json!({"type": "result", "success": true, "data": data, "correlation_id": correlation_id}),
        Err(error) => json!({"type": "result", "success": false, "error": error, "correlation_id": correlation_id}),
    }
    .to_string()
}

async fn run_socket(socket: WebSocket, state: Arc<WsState>) {
    let socket_id = crate::context::new_uuid().to_string();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    state.hub.register(&socket_id, tx.clone());
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(Message::Text(frame.into())).await.is_err() {
                return;
            }
        }
    });
    let _ = tx.send(event_frame("connected", json!({ "socket_id": socket_id })));
    while let Some(Ok(message)) = stream.next().await {
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Message::Close(_) => break,
            _ => continue,
        };
        let state = state.clone();
        let tx = tx.clone();
        let socket_id = socket_id.clone();
        tokio::spawn(async move {
            let frame = handle_frame(&state, &socket_id, &text).await;
            let _ = tx.send(frame);
        });
    }
    state.hub.unregister(&socket_id);
    writer.abort();
}

/// One client frame: `{"method": "service.method", "data": {…}, "correlation_id": …}`.
async fn handle_frame(state: &WsState, socket_id: &str, text: &str) -> String {
    let request: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return result_frame(
                &Value::Null,
                Err(RemoteError::malformed_request(format!(
                    "frame is not valid JSON: {e}"
                ))),
            );
        }
    };
    let correlation_id = request
        .get("correlation_id")
        .cloned()
        .unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return result_frame(
            &correlation_id,
            Err(RemoteError::malformed_request("frame has no `method`")),
        );
    };
    let Some((service, name)) = method
        .split_once('.')
        .filter(|(s, _)| state.services.contains(s))
    else {
        return result_frame(&correlation_id, Err(RemoteError::method_not_found(method)));
    };
    let data = match request.get("data") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v @ (Value::Object(_) | Value::Array(_))) => v.clone(),
        Some(_) => {
            return result_frame(
                &correlation_id,
                Err(RemoteError::malformed_request("`data` must be an object")),
            );
        }
    };
    let root = WorkerContext::root().with_data("socket_id", socket_id);
    let outcome = context::scope(root, state.client.call(service, name, data))
        .await
        .map_err(|e| crate::Exception::to_remote(&e));
    result_frame(&correlation_id, outcome)
}
