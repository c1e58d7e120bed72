//! Forwarding one request: route, pick, send, maybe once more elsewhere,
//! answer.
//!
//! Each try waits at most `try_timeout` for a response head, and all tries
//! together at most `deadline`. When a try fails, [`crate::retry`] decides
//! whether a second one may go, to another instance picked from the
//! routing table as it is **then** (an instance deregistered meanwhile is
//! not picked). A response head, whatever its status, ends the tries: its
//! body then streams to the client.

use arc_swap::ArcSwap;
use axum::body::Body;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Instant;
use tower::retry::budget::Budget;

use crate::balance;
use crate::body::{Replay, ResponseBody};
use crate::eject::now_ms;
use crate::headers;
use crate::metrics::{Metrics, ServiceMetrics, UpstreamError};
use crate::pool::ConnectionPool;
use crate::respond;
use crate::retry::{self, Failure};
use crate::routes::{Lookup, Pool, RouteTable};
use crate::settings::Settings;
use crate::sticky::{self, Sticky, Wish, HANDSHAKE_MAX};
use crate::upstream::{InFlight, Upstream};
use crate::websocket::Tunnels;

/// What every request of every worker shares: the routing table, the
/// counters, the tunnels, the sticky sessions.
pub(crate) struct Shared {
    /// The routing table, swapped whole on every registry change.
    pub(crate) routes: ArcSwap<RouteTable>,
    /// The metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// The WebSocket tunnels.
    pub(crate) tunnels: Tunnels,
    settings: Settings,
    unrouted: Arc<ServiceMetrics>,
    sticky: Sticky,
}

impl Shared {
    /// The shared state, with an empty routing table.
    pub(crate) fn new(settings: Settings, metrics: Arc<Metrics>) -> Shared {
        Shared {
            routes: ArcSwap::from_pointee(RouteTable::default()),
            unrouted: metrics.service(""),
            sticky: Sticky::new(&settings.sticky_cookie, settings.sticky_sessions),
            tunnels: Tunnels::default(),
            metrics,
            settings,
        }
    }
}

/// One worker's proxy: the shared state and its own connection pool (a
/// pool's connections are driven by the runtime that opened them).
pub(crate) struct Proxy {
    shared: Arc<Shared>,
    pool: Arc<ConnectionPool>,
}

impl Proxy {
    /// A proxy on `shared`, with a new connection pool.
    pub(crate) fn new(shared: Arc<Shared>) -> Proxy {
        let settings = &shared.settings;
        let pool = Arc::new(ConnectionPool::new(
            settings.connect_timeout,
            settings.pool_idle_timeout,
            settings.pool_max_idle_per_host,
        ));
        Proxy { shared, pool }
    }

    /// Answers one client request that came from `peer` (its address as
    /// an `X-Forwarded-For` value).
    pub(crate) async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: Option<&HeaderValue>,
    ) -> Response<ResponseBody> {
        let start = Instant::now();
        let _busy = Busy::new(&self.shared.metrics.in_flight);
        let websocket = req.method() == Method::GET && headers::is_websocket_upgrade(req.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let request_id = headers::to_upstream(&mut parts.headers, peer, websocket);
        let table = self.shared.routes.load();
        let revision = table.revision;
        let found = match table.lookup(&parts.method, parts.uri.path()) {
            Lookup::Found(pool) => Ok(pool.clone()),
            Lookup::NotFound => Err(respond::not_found(
                parts.method.as_str(),
                parts.uri.path(),
                &request_id,
            )),
            Lookup::MethodNotAllowed(allow) => Err(respond::method_not_allowed(
                parts.method.as_str(),
                &allow,
                &request_id,
            )),
        };
        drop(table);
        let (response, metrics) = match found {
            Ok(pool) => {
                let tried = Tried {
                    parts,
                    request_id,
                    client_upgrade,
                    start,
                    revision,
                };
                let response = self.forward(&pool, tried, body).await;
                (response, pool.metrics.clone())
            }
            Err(response) => (response, self.shared.unrouted.clone()),
        };
        metrics.response(response.status().as_u16(), start.elapsed());
        response
    }

    /// Sends the request to the pool's instances, at most twice.
    async fn forward(
        &self,
        first_pool: &Arc<Pool>,
        mut req: Tried,
        body: Incoming,
    ) -> Response<ResponseBody> {
        let deadline = req.start + self.shared.settings.deadline;
        let method = req.parts.method.clone();
        let replay = match tokio::time::timeout_at(
            deadline.into(),
            Replay::keep(body, &method, self.shared.settings.replay_buffer),
        )
        .await
        {
            Ok(Ok(replay)) => replay,
            Ok(Err(error)) => return respond::bad_request(&error.to_string(), &req.request_id),
            Err(_) => return respond::request_timeout(&req.request_id),
        };
        let wish = if first_pool.sticky {
            self.shared
                .sticky
                .wish(&req.parts.headers, req.parts.uri.query())
        } else {
            Wish::default()
        };
        let path_and_query = req
            .parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        first_pool.budget.deposit();

        let mut pool = first_pool.clone();
        // Reading the body took time: pick from the table as it is now.
        if self.shared.routes.load().revision != req.revision {
            if let Some(current) = self.current_pool(&method, req.parts.uri.path()) {
                pool = current;
            }
        }
        let now = now_ms();
        let mut next = wish
            .token
            .as_deref()
            .and_then(|token| sticky::find(&pool.upstreams, token, now))
            .or_else(|| balance::pick(&pool.upstreams, None, now));
        let mut failed: Option<Failure> = None;
        while let Some(upstream) = next.take() {
            let Some(out) = replay.for_try() else { break };
            let mut request = Request::new(out);
            *request.method_mut() = method.clone();
            *request.uri_mut() = Uri::from(path_and_query.clone());
            *request.version_mut() = Version::HTTP_11;
            *request.headers_mut() = req.parts.headers.clone();
            let in_flight = upstream.start();
            let left = deadline.saturating_duration_since(Instant::now());
            let sent = tokio::time::timeout(
                self.shared.settings.try_timeout.min(left),
                self.pool.send(&upstream, request),
            )
            .await;
            let failure = match sent {
                Ok(Ok(response)) => {
                    upstream.ejection.record_success();
                    return self
                        .answer(response, in_flight, &pool, &wish, &mut req)
                        .await;
                }
                Ok(Err(error)) => {
                    let failure = Failure::of(&error);
                    tracing::debug!(service = %pool.service, instance = %upstream.instance_id,
                        error = ?error, sent = failure.sent, "try failed");
                    failure
                }
                Err(_) => Failure::TIMEOUT,
            };
            drop(in_flight);
            self.note_failure(&pool, &upstream, failure);
            if failed.replace(failure).is_some() {
                break; // that was the retry
            }
            if !retry::may_retry(&method, &replay, failure) || Instant::now() >= deadline {
                break;
            }
            // The table as it is now: what was deregistered is not picked.
            if let Some(current) = self.current_pool(&method, req.parts.uri.path()) {
                pool = current;
            }
            next = balance::pick(&pool.upstreams, Some(&upstream), now_ms());
            if next.is_some() {
                if pool.budget.withdraw() {
                    pool.metrics.retried();
                } else {
                    pool.metrics.retry_refused();
                    next = None;
                }
            }
        }
        match failed {
            None => respond::unavailable(&pool.service, &req.request_id),
            Some(f) if f.error == UpstreamError::Timeout => {
                respond::gateway_timeout(&pool.service, &req.request_id)
            }
            Some(f) if f.error == UpstreamError::Connect => respond::bad_gateway(
                &pool.service,
                "cannot connect to an instance",
                &req.request_id,
            ),
            Some(_) => respond::bad_gateway(
                &pool.service,
                "the connection to the instance broke",
                &req.request_id,
            ),
        }
    }

    /// The pool of `method` on `path` in the routing table now.
    fn current_pool(&self, method: &Method, path: &str) -> Option<Arc<Pool>> {
        match self.shared.routes.load().lookup(method, path) {
            Lookup::Found(pool) => Some(pool.clone()),
            _ => None,
        }
    }

    /// Counts a failed try, and ejects its instance after too many connect
    /// failures in a row.
    fn note_failure(&self, pool: &Pool, upstream: &Upstream, failure: Failure) {
        pool.metrics.upstream_error(failure.error);
        match failure.error {
            UpstreamError::Connect => {
                let ejected = upstream.ejection.record_failure(
                    now_ms(),
                    self.shared.settings.eject_after,
                    self.shared.settings.eject_for,
                );
                if ejected {
                    pool.metrics.ejected();
                    tracing::warn!(service = %pool.service, instance = %upstream.instance_id,
                        address = %upstream.authority, cool_down = ?self.shared.settings.eject_for,
                        "instance ejected after connect failures");
                }
            }
            // A connection was made: the instance is there.
            _ if failure.sent => upstream.ejection.record_success(),
            _ => {}
        }
    }

    /// The client's answer from an instance's response.
    async fn answer(
        &self,
        mut response: Response<Incoming>,
        in_flight: InFlight,
        pool: &Pool,
        wish: &Wish,
        req: &mut Tried,
    ) -> Response<ResponseBody> {
        let status = response.status();
        let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
        let upstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut response));
        let (mut parts, incoming) = response.into_parts();
        headers::to_client(&mut parts.headers, &req.request_id, upgrade);
        if pool.sticky {
            self.shared
                .sticky
                .set_cookie(&mut parts.headers, wish, in_flight.upstream());
        }
        if let Some(upstream_upgrade) = upstream_upgrade {
            let Some(client_upgrade) = req.client_upgrade.take() else {
                return respond::bad_gateway(
                    &pool.service,
                    "the instance switched protocols unasked",
                    &req.request_id,
                );
            };
            let open = self.shared.metrics.websockets.clone();
            self.shared
                .tunnels
                .splice(client_upgrade, upstream_upgrade, in_flight, open);
            return Response::from_parts(parts, ResponseBody::Other(Body::empty()));
        }
        let short = http_body::Body::size_hint(&incoming)
            .exact()
            .is_some_and(|n| n <= HANDSHAKE_MAX);
        if pool.sticky && wish.handshake && status == StatusCode::OK && short {
            if let Some(bytes) = self.read_small(incoming).await {
                self.shared.sticky.learn(&bytes, in_flight.upstream());
                return Response::from_parts(parts, ResponseBody::Other(Body::from(bytes)));
            }
            return respond::bad_gateway(&pool.service, "the answer broke off", &req.request_id);
        }
        Response::from_parts(parts, ResponseBody::upstream(incoming, in_flight))
    }

    /// A short response body, whole; `None` when it broke off.
    async fn read_small(&self, incoming: Incoming) -> Option<Bytes> {
        let limit = usize::try_from(HANDSHAKE_MAX).unwrap_or(usize::MAX);
        let read = Limited::new(incoming, limit).collect();
        match tokio::time::timeout(self.shared.settings.try_timeout, read).await {
            Ok(Ok(collected)) => Some(collected.to_bytes()),
            _ => None,
        }
    }
}

/// Counts a request in the in-flight gauge until dropped (also when the
/// client goes away mid-request).
struct Busy(Gauge);

impl Busy {
    fn new(gauge: &Gauge) -> Busy {
        gauge.inc();
        Busy(gauge.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A request being forwarded: what every try needs of it.
struct Tried {
    parts: http::request::Parts,
    request_id: HeaderValue,
    client_upgrade: Option<OnUpgrade>,
    start: Instant,
    /// The registry revision of the table it was routed with.
    revision: shimeji::registry::Revision,
}
