//! OpenTelemetry export: every entrypoint run becomes a span sent to an OTLP
//! collector over HTTP (feature `otlp`).
//!
//! # Turning it on
//!
//! Enable the feature:
//!
//! ```toml
//! [dependencies]
//! shimeji = { version = "0.1", features = ["otlp"] }
//! ```
//!
//! point the service at a collector (the OTLP/HTTP port of an OpenTelemetry
//! Collector, Jaeger, Tempo, …):
//!
//! ```sh
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 ./greeter
//! ```
//!
//! and install the exporter first thing in `main`, keeping the guard until
//! the services have stopped:
//!
//! ```no_run
//! # async fn run_services() {}
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // `None` when OTEL_EXPORTER_OTLP_ENDPOINT is not set: nothing is exported.
//!     let otlp = shimeji::otlp::install_from_env("greeter")?;
//!     run_services().await;
//!     if let Some(otlp) = otlp {
//!         otlp.shutdown()?; // sends the spans still waiting
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # What is exported
//!
//! One span per entrypoint run (RPC, event handler, timer, HTTP), of kind
//! SERVER, named `{service}.{entrypoint}`, with the attributes
//! `shimeji.service`, `shimeji.entrypoint` and `shimeji.call_id`. A run that
//! failed has status ERROR with the error's message and the attribute
//! `exception.type`. The resource's `service.name` is the name given to
//! [`install`] (other resource attributes come from `OTEL_RESOURCE_ATTRIBUTES`).
//!
//! The ids are the worker's own, not new ones: a span's trace id and span id
//! are the `trace_id` and `span_id` of its JSON log lines and of its
//! [`WorkerContext`](crate::WorkerContext), and its parent span id is the span
//! id in the `nameko.traceparent` AMQP header (or HTTP `traceparent` header)
//! it was called with. So a chain A → B → C, in one process or across
//! several, Rust or Python, shows as one trace with the right parent links.
//! Runs whose incoming `traceparent` says "not sampled" (flags `00`) are not
//! exported.
//!
//! # How it sends
//!
//! Spans are handed to the OpenTelemetry SDK's batch processor, which sends
//! them from a thread of its own (every 5 seconds, or sooner when 512 are
//! waiting; the standard `OTEL_BSP_*` variables change that). A worker never
//! waits for the collector; when the queue is full, spans are dropped. Bodies
//! are OTLP JSON over plain HTTP: to reach a collector that needs TLS, send to
//! a local agent or collector that forwards. `OTEL_EXPORTER_OTLP_HEADERS` and
//! `OTEL_EXPORTER_OTLP_TIMEOUT` are read as usual. Failed exports are logged
//! (target `shimeji::otlp`), once until an export succeeds again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanExporter, SpanLinks, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::trace::{FinishedSpan, SpanSink};

/// The collector's base URL; `/v1/traces` is appended.
const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The full URL traces are posted to; wins over [`ENDPOINT_VAR`].
const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The path of the traces endpoint under a collector's base URL.
const TRACES_PATH: &str = "/v1/traces";
/// How long [`OtlpGuard::shutdown`] waits for the last spans to go out.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the exporter could not be installed or flushed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    /// This process already has a span sink ([`crate::trace::set_span_sink`]
    /// takes one per process).
    #[error("a span sink is already installed in this process")]
    AlreadyInstalled,
    /// The endpoint is not a plain `http://` URL with a host.
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given (or the variable it came from).
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The OpenTelemetry exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Build(String),
    /// Flushing or shutting down the exporter failed or timed out.
    #[error("cannot flush the OTLP exporter: {0}")]
    Flush(String),
}

/// Installs the exporter as this process's span sink, sending to the
/// collector at `endpoint`, a base URL such as `http://127.0.0.1:4318` (as
/// in `OTEL_EXPORTER_OTLP_ENDPOINT`: `/v1/traces` is appended unless it is
/// there already). `service_name` becomes the resource's `service.name`.
///
/// Keep the returned guard until the services have stopped: dropping it
/// shuts the exporter down.
///
/// ```no_run
/// # fn main() -> Result<(), shimeji::otlp::OtlpError> {
/// let otlp = shimeji::otlp::install("http://127.0.0.1:4318", "greeter")?;
/// // … run the services …
/// otlp.shutdown()?;
/// # Ok(()) }
/// ```
pub fn install(endpoint: &str, service_name: &str) -> Result<OtlpGuard, OtlpError> {
    let base = checked_endpoint(endpoint)?.trim_end_matches('/');
    let url = if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    };
    install_url(url, service_name)
}

/// Installs the exporter when the standard variables name a collector:
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL, used as it is) or
/// else `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, `/v1/traces` appended).
/// Returns `Ok(None)` when neither is set, or when `OTEL_SDK_DISABLED` is
/// `true`.
///
/// ```no_run
/// # fn main() -> Result<(), shimeji::otlp::OtlpError> {
/// // OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
/// let otlp = shimeji::otlp::install_from_env("greeter")?;
/// // … run the services …
/// if let Some(otlp) = otlp {
///     otlp.shutdown()?;
/// }
/// # Ok(()) }
/// ```
pub fn install_from_env(service_name: &str) -> Result<Option<OtlpGuard>, OtlpError> {
    if env_value("OTEL_SDK_DISABLED")?.is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let url = if let Some(url) = env_value(TRACES_ENDPOINT_VAR)? {
        checked_endpoint(&url)?.to_owned()
    } else if let Some(base) = env_value(ENDPOINT_VAR)? {
        let base = checked_endpoint(&base)?.trim_end_matches('/');
        format!("{base}{TRACES_PATH}")
    } else {
        return Ok(None);
    };
    let protocol = match env_value("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")? {
        Some(protocol) => Some(protocol),
        None => env_value("OTEL_EXPORTER_OTLP_PROTOCOL")?,
    };
    if let Some(protocol) = protocol.filter(|p| p.trim() != "http/json") {
        tracing::warn!(
            target: "shimeji::otlp",
            protocol = protocol.trim(),
            "only http/json is supported: spans are sent as http/json"
        );
    }
    install_url(url, service_name).map(Some)
}

/// Keeps the exporter running; [`shutdown`](Self::shutdown) (or dropping
/// it) sends the spans still waiting and stops it.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the exporter down"]
pub struct OtlpGuard {
    processor: Option<Arc<BatchSpanProcessor>>,
}

impl OtlpGuard {
    /// Sends the spans collected so far and waits for the collector's
    /// answer (at most a few seconds). Blocks the calling thread: from async
    /// code, prefer `tokio::task::spawn_blocking`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), shimeji::otlp::OtlpError> {
    /// let otlp = shimeji::otlp::install("http://127.0.0.1:4318", "greeter")?;
    /// otlp.flush()?;
    /// # Ok(()) }
    /// ```
    pub fn flush(&self) -> Result<(), OtlpError> {
        match &self.processor {
            Some(processor) => processor
                .force_flush()
                .map_err(|e| OtlpError::Flush(e.to_string())),
            None => Ok(()),
        }
    }

    /// Sends the spans still waiting and stops the exporter; spans of runs
    /// that end later are dropped. Blocks the calling thread for at most 5
    /// seconds: from async code whose runtime also serves the collector (a
    /// test), call it through `tokio::task::spawn_blocking`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), shimeji::otlp::OtlpError> {
    /// let otlp = shimeji::otlp::install("http://127.0.0.1:4318", "greeter")?;
    /// // … run the services …
    /// otlp.shutdown()?;
    /// # Ok(()) }
    /// ```
    pub fn shutdown(mut self) -> Result<(), OtlpError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), OtlpError> {
        match self.processor.take() {
            Some(processor) => processor
                .shutdown_with_timeout(SHUTDOWN_TIMEOUT)
                .map_err(|e| OtlpError::Flush(e.to_string())),
            None => Ok(()),
        }
    }
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::warn!(target: "shimeji::otlp", %error, "OTLP exporter shutdown");
        }
    }
}

/// Checks that `endpoint` is a plain `http://` URL with a host, and returns
/// it trimmed.
fn checked_endpoint(endpoint: &str) -> Result<&str, OtlpError> {
    let endpoint = endpoint.trim();
    let invalid = |reason| OtlpError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let scheme = |s: &str| {
        endpoint
            .get(..s.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(s))
    };
    if scheme("https://") {
        return Err(invalid(
            "https is not supported (no TLS in the `otlp` feature): \
             send to a local collector or agent over http",
        ));
    }
    if !scheme("http://") {
        return Err(invalid("must start with http://"));
    }
    let rest = &endpoint["http://".len()..];
    if rest.split('/').next().unwrap_or_default().is_empty() {
        return Err(invalid("has no host"));
    }
    if rest.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(invalid("has spaces, a query or a fragment"));
    }
    Ok(endpoint)
}

/// A variable's value; `None` when unset or blank.
fn env_value(name: &'static str) -> Result<Option<String>, OtlpError> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(Some(value)),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(OtlpError::Endpoint {
            endpoint: format!("${name}"),
            reason: "is not valid UTF-8",
        }),
    }
}

/// The exporter's HTTP client (reqwest) needs a rustls crypto provider when
/// any crate of the program turns on reqwest's rustls support without one
/// (the `shimeji` command does, for the RabbitMQ management API): without
/// it, building the client panics. Installs ring's, the one shimeji's AMQP
/// TLS uses, unless the program installed one.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one at the same moment: either wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Builds the exporter and its batch processor for the full traces `url`
/// and installs the sink.
fn install_url(url: String, service_name: &str) -> Result<OtlpGuard, OtlpError> {
    if crate::trace::span_sink().is_some() {
        return Err(OtlpError::AlreadyInstalled);
    }
    ensure_crypto_provider();
    let inner = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .with_protocol(Protocol::HttpJson)
        .build()
        .map_err(|e| OtlpError::Build(e.to_string()))?;
    let mut exporter = LoggedExporter {
        inner,
        url,
        failing: AtomicBool::new(false),
    };
    exporter.set_resource(
        &Resource::builder()
            .with_service_name(service_name.to_owned())
            .build(),
    );
    let processor = Arc::new(BatchSpanProcessor::builder(exporter).build());
    let sink = OtlpSink {
        processor: processor.clone(),
        scope: InstrumentationScope::builder("shimeji")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    };
    if crate::trace::set_span_sink(sink).is_err() {
        // Installed by someone else meanwhile: stop the idle batch thread.
        let _ = processor.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
        return Err(OtlpError::AlreadyInstalled);
    }
    Ok(OtlpGuard {
        processor: Some(processor),
    })
}

/// The span sink: turns each finished run into span data and queues it.
struct OtlpSink {
    processor: Arc<BatchSpanProcessor>,
    scope: InstrumentationScope,
}

impl SpanSink for OtlpSink {
    fn export(&self, span: FinishedSpan) {
        if let Some(data) = span_data(span, &self.scope) {
            // A non-blocking queue push; the batch thread does the I/O.
            self.processor.on_end(data);
        }
    }
}

/// The OpenTelemetry span of one run, with the run's own ids; `None` when
/// its trace is not sampled.
fn span_data(span: FinishedSpan, scope: &InstrumentationScope) -> Option<SpanData> {
    let ids = span.span;
    if !ids.sampled() {
        return None;
    }
    let mut attributes = vec![
        KeyValue::new("shimeji.service", span.service),
        KeyValue::new("shimeji.entrypoint", span.entrypoint),
        KeyValue::new("shimeji.call_id", span.call_id),
    ];
    let status = match span.error {
        None => Status::Unset,
        Some((exc_type, message)) => {
            attributes.push(KeyValue::new("exception.type", exc_type));
            Status::error(message)
        }
    };
    Some(SpanData {
        span_context: SpanContext::new(
            TraceId::from(ids.trace_id()),
            SpanId::from(ids.span_id()),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: span.parent_span_id.map_or(SpanId::INVALID, SpanId::from),
        // The parent's context arrived from the caller (a header, or the
        // in-memory transport): remote in OpenTelemetry's sense.
        parent_span_is_remote: span.parent_span_id.is_some(),
        span_kind: SpanKind::Server,
        name: format!("{}.{}", span.service, span.entrypoint).into(),
        start_time: span.start,
        end_time: span.end.max(span.start),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    })
}

/// The OTLP exporter, logging failed exports: a warning when exports start
/// failing, debug lines while they go on failing, a note when they recover.
#[derive(Debug)]
struct LoggedExporter {
    inner: opentelemetry_otlp::SpanExporter,
    url: String,
    failing: AtomicBool,
}

impl SpanExporter for LoggedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: "shimeji::otlp", url = %self.url, "span export works again");
                }
            }
            Err(error) => {
                if self.failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(target: "shimeji::otlp", url = %self.url, %error, spans, "span export failed");
                } else {
                    tracing::warn!(
                        target: "shimeji::otlp",
                        url = %self.url,
                        %error,
                        spans,
                        "span export failed; spans are dropped until the collector answers \
                         (further failures are logged at debug level)"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceParent;
    use std::time::SystemTime;

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            checked_endpoint(" http://127.0.0.1:4318/ ").ok(),
            Some("http://127.0.0.1:4318/")
        );
        assert!(checked_endpoint("HTTP://collector:4318").is_ok());
        for bad in [
            "",
            "127.0.0.1:4318",
            "https://collector:4318",
            "http://",
            "http:///v1/traces",
            "http://collector:4318?x=1",
            "http://coll ector:4318",
            "grpc://collector:4317",
            "é",
        ] {
            assert!(
                matches!(checked_endpoint(bad), Err(OtlpError::Endpoint { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn spans_keep_the_run_ids() {
        let scope = InstrumentationScope::builder("shimeji").build();
        let parent = TraceParent::new_root();
        let own = parent.child();
        let start = SystemTime::now();
        let finished = FinishedSpan {
            service: "svc",
            entrypoint: "go",
            call_id: "svc.go.1".into(),
            span: own,
            parent_span_id: Some(parent.span_id()),
            start,
            end: start - Duration::from_secs(1),
            error: Some(("Boom".into(), "it broke".into())),
        };
        let data = span_data(finished, &scope).unwrap();
        assert_eq!(data.name, "svc.go");
        assert_eq!(data.span_kind, SpanKind::Server);
        assert_eq!(data.span_context.trace_id(), TraceId::from(own.trace_id()));
        assert_eq!(data.span_context.span_id(), SpanId::from(own.span_id()));
        assert_eq!(data.parent_span_id, SpanId::from(parent.span_id()));
        assert_eq!(data.end_time, start, "an end before the start is clamped");
        assert_eq!(data.status, Status::error("it broke"));
        assert!(data
            .attributes
            .contains(&KeyValue::new("exception.type", "Boom")));

        let finished = FinishedSpan {
            service: "svc",
            entrypoint: "go",
            call_id: String::new(),
            span: TraceParent::from_parts(1, 2, false).unwrap(),
            parent_span_id: None,
            start,
            end: start,
            error: None,
        };
        assert!(span_data(finished, &scope).is_none());
    }
}
