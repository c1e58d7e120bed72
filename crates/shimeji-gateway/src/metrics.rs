//! The gateway's Prometheus metrics, served on `/metrics`.
//!
//! Every label set is bounded: `service` is a service name from the
//! registry (empty for requests no route matched), `class` one of five
//! status classes, `kind` and `outcome` fixed words. A request path never
//! becomes a label. The counters of a service are looked up once, when a
//! routing table is built, and the request path only increments them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    service: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    service: String,
    outcome: &'static str,
}

/// Why a try got no response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    /// No connection could be made (refused, unreachable, connect timeout).
    Connect,
    /// The try's time ran out before the response head came.
    Timeout,
    /// The connection broke after the request went out (reset, closed).
    Broken,
}

impl UpstreamError {
    fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Broken => "broken",
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const ERRORS: [UpstreamError; 3] = [
    UpstreamError::Connect,
    UpstreamError::Timeout,
    UpstreamError::Broken,
];

/// The counters of one service, ready to increment.
#[derive(Debug)]
pub(crate) struct ServiceMetrics {
    requests: [Counter; 5],
    duration: Histogram,
    errors: [Counter; 3],
    retried: Counter,
    refused: Counter,
    ejections: Counter,
}

impl ServiceMetrics {
    /// A response of `status` was sent after `elapsed`.
    pub(crate) fn response(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// A try failed.
    pub(crate) fn upstream_error(&self, error: UpstreamError) {
        let i = ERRORS.iter().position(|e| *e == error).unwrap_or(0);
        self.errors[i].inc();
    }

    /// A request was sent again to another instance.
    pub(crate) fn retried(&self) {
        self.retried.inc();
    }

    /// A retry was allowed by the policy but not by the budget.
    pub(crate) fn retry_refused(&self) {
        self.refused.inc();
    }

    /// An instance was ejected.
    pub(crate) fn ejected(&self) {
        self.ejections.inc();
    }
}

/// The gateway's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<ServiceLabel, Histogram, fn() -> Histogram>,
    errors: Family<KindLabels, Counter>,
    retries: Family<OutcomeLabels, Counter>,
    ejections: Family<ServiceLabel, Counter>,
    services: Mutex<HashMap<String, Arc<ServiceMetrics>>>,
    /// Instances in the routing table.
    pub(crate) instances: Gauge,
    /// Route templates in the routing table.
    pub(crate) routes: Gauge,
    /// The registry revision the routing table was built from.
    pub(crate) revision: Gauge,
    /// Routing tables built.
    pub(crate) tables: Counter,
    /// WebSocket tunnels open.
    pub(crate) websockets: Gauge,
    /// Requests being served.
    pub(crate) in_flight: Gauge,
}

impl Metrics {
    /// Registers every metric under the prefix `shimeji_gateway`.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("shimeji_gateway");
        let metrics = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            errors: Family::default(),
            retries: Family::default(),
            ejections: Family::default(),
            services: Mutex::new(HashMap::new()),
            instances: Gauge::default(),
            routes: Gauge::default(),
            revision: Gauge::default(),
            tables: Counter::default(),
            websockets: Gauge::default(),
            in_flight: Gauge::default(),
        };
        let m = &metrics;
        registry.register(
            "requests",
            "Responses sent, by service and status class",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request to the response head, by service",
            m.duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Tries that got no response head: connect, timeout, broken",
            m.errors.clone(),
        );
        registry.register(
            "retries",
            "Requests sent again to another instance (sent), or that the budget kept from it (refused)",
            m.retries.clone(),
        );
        registry.register(
            "ejections",
            "Instances taken out of rotation after connect failures in a row",
            m.ejections.clone(),
        );
        registry.register(
            "instances",
            "Instances in the routing table",
            m.instances.clone(),
        );
        registry.register(
            "routes",
            "Route templates in the routing table",
            m.routes.clone(),
        );
        registry.register(
            "registry_revision",
            "The registry revision the routing table was built from",
            m.revision.clone(),
        );
        registry.register(
            "routing_tables",
            "Routing tables built from the registry",
            m.tables.clone(),
        );
        registry.register(
            "websockets_open",
            "WebSocket tunnels open",
            m.websockets.clone(),
        );
        registry.register("in_flight", "Requests being served", m.in_flight.clone());
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The counters of `service` (`""` for requests no route matched).
    pub(crate) fn service(&self, service: &str) -> Arc<ServiceMetrics> {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = services.get(service) {
            return found.clone();
        }
        let name = service.to_string();
        let made = Arc::new(ServiceMetrics {
            requests: CLASSES.map(|class| {
                self.requests
                    .get_or_create(&RequestLabels {
                        service: name.clone(),
                        class,
                    })
                    .clone()
            }),
            duration: self
                .duration
                .get_or_create(&ServiceLabel {
                    service: name.clone(),
                })
                .clone(),
            errors: ERRORS.map(|kind| {
                self.errors
                    .get_or_create(&KindLabels {
                        service: name.clone(),
                        kind: kind.label(),
                    })
                    .clone()
            }),
            retried: self.retry_counter(&name, "sent"),
            refused: self.retry_counter(&name, "refused"),
            ejections: self
                .ejections
                .get_or_create(&ServiceLabel {
                    service: name.clone(),
                })
                .clone(),
        });
        services.insert(name, made.clone());
        made
    }

    fn retry_counter(&self, service: &str, outcome: &'static str) -> Counter {
        self.retries
            .get_or_create(&OutcomeLabels {
                service: service.to_string(),
                outcome,
            })
            .clone()
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "cannot encode the gateway's metrics");
        }
        text
    }
}

/// The buckets of the duration histogram: 0.5 ms to 16 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_service_and_class_with_bounded_labels() {
        let metrics = Metrics::new();
        let users = metrics.service("users");
        users.response(200, Duration::from_millis(3));
        users.response(503, Duration::from_millis(3));
        users.upstream_error(UpstreamError::Connect);
        users.retried();
        metrics.service("").response(404, Duration::ZERO);
        let text = metrics.render();
        assert!(
            text.contains(r#"shimeji_gateway_requests_total{service="users",class="2xx"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"shimeji_gateway_requests_total{service="users",class="5xx"} 1"#));
        assert!(text.contains(r#"shimeji_gateway_requests_total{service="",class="4xx"} 1"#));
        assert!(text.contains(
            r#"shimeji_gateway_upstream_errors_total{service="users",kind="connect"} 1"#
        ));
        assert!(text.contains(r#"shimeji_gateway_retries_total{service="users",outcome="sent"} 1"#));
        assert!(Arc::ptr_eq(&users, &metrics.service("users")));
    }
}
