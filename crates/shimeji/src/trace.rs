//! W3C trace context: one trace id follows a request through every service
//! it touches.
//!
//! Every entrypoint run is a span of a trace. A worker called by another
//! worker (in this process, over AMQP, or from an HTTP client that sends a
//! [`traceparent`](https://www.w3.org/TR/trace-context/#traceparent-header)
//! header) continues its caller's trace: same trace id, a new span id, the
//! caller's span as parent. A worker with no caller starts a new trace.
//!
//! On AMQP the context travels as the `nameko.traceparent` header, so Python
//! Nameko services in a chain pass it on like any other context data (a
//! plain `traceparent` header is read too). On HTTP it is the `traceparent`
//! header. The ids are in every worker's [`WorkerContext`](crate::WorkerContext)
//! and in the JSON log lines; with the `otlp` feature they are the ids of
//! the spans exported.
//!
//! ```
//! use shimeji::trace::TraceParent;
//!
//! let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//! let parent = TraceParent::parse(header).unwrap();
//! assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert!(parent.sampled());
//!
//! let child = parent.child();
//! assert_eq!(child.trace_id(), parent.trace_id());
//! assert_ne!(child.span_id(), parent.span_id());
//! assert_eq!(parent.to_string(), header);
//! ```

use std::fmt;
use std::num::NonZeroU64;

/// The header name, on HTTP and (after the `nameko.` prefix) on AMQP.
pub const TRACEPARENT: &str = "traceparent";

/// One span's place in a trace: trace id, span id, sampled flag.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    // Halves of the trace id, high first: two `u64`s keep the type 8-byte
    // aligned and, with the span id's niche, an `Option` of it 32 bytes,
    // which every worker context carries.
    trace_id: [u64; 2],
    span_id: NonZeroU64,
    flags: u8,
}

fn random_nonzero_u64() -> NonZeroU64 {
    loop {
        if let Some(id) = NonZeroU64::new(fastrand::u64(..)) {
            return id;
        }
    }
}

fn halves(id: u128) -> [u64; 2] {
    [(id >> 64) as u64, id as u64]
}

impl TraceParent {
    /// The first span of a new trace (sampled).
    pub fn new_root() -> Self {
        TraceParent {
            // The high half may be zero; the low one never is.
            trace_id: [fastrand::u64(..), random_nonzero_u64().get()],
            span_id: random_nonzero_u64(),
            flags: 1,
        }
    }

    /// A new span of the same trace, with the same flags.
    pub fn child(&self) -> Self {
        TraceParent {
            span_id: random_nonzero_u64(),
            ..*self
        }
    }

    /// Builds one from its parts; `None` when an id is zero (invalid in W3C).
    pub fn from_parts(trace_id: u128, span_id: u64, sampled: bool) -> Option<Self> {
        Some(TraceParent {
            trace_id: (trace_id != 0).then_some(halves(trace_id))?,
            span_id: NonZeroU64::new(span_id)?,
            flags: u8::from(sampled),
        })
    }

    /// Parses a `traceparent` header value. Accepts version `00` and, as the
    /// specification asks, later versions by their first four fields.
    /// Returns `None` for anything malformed; never panics.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut parts = header.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let lower_hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !lower_hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceParent {
            trace_id: (trace_id != 0).then_some(halves(trace_id))?,
            span_id: NonZeroU64::new(span_id)?,
            flags,
        })
    }

    /// The trace id.
    pub fn trace_id(&self) -> u128 {
        (u128::from(self.trace_id[0]) << 64) | u128::from(self.trace_id[1])
    }

    /// The span id.
    pub fn span_id(&self) -> u64 {
        self.span_id.get()
    }

    /// Whether the trace is sampled (flag `01`).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id())
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

/// The `traceparent` header value: `00-{trace id}-{span id}-{flags}`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id(),
            self.span_id,
            self.flags
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

/// One finished entrypoint run, as a span: what a [`SpanSink`] receives.
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    /// The service.
    pub service: &'static str,
    /// The entrypoint.
    pub entrypoint: &'static str,
    /// The worker's call id.
    pub call_id: String,
    /// The worker's span: trace id, span id, flags.
    pub span: TraceParent,
    /// The span id of the caller's span, if any.
    pub parent_span_id: Option<u64>,
    /// When the run started.
    pub start: std::time::SystemTime,
    /// When it ended.
    pub end: std::time::SystemTime,
    /// `None` when it succeeded, else the error's type and message.
    pub error: Option<(String, String)>,
}

/// Where finished entrypoint spans go: an exporter (the `otlp` feature
/// installs one), or a test that collects them.
pub trait SpanSink: Send + Sync + 'static {
    /// Takes one finished span. Called on the worker's task: hand the span
    /// off (to a channel, a batch) rather than doing I/O here.
    fn export(&self, span: FinishedSpan);
}

static SINK: std::sync::OnceLock<Box<dyn SpanSink>> = std::sync::OnceLock::new();

/// Installs the process's span sink. Only the first call installs one;
/// later calls return the sink they were given back.
pub fn set_span_sink(sink: impl SpanSink) -> Result<(), Box<dyn SpanSink>> {
    SINK.set(Box::new(sink))
}

/// The installed span sink, if any.
pub(crate) fn span_sink() -> Option<&'static dyn SpanSink> {
    SINK.get().map(|b| b.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_first_fields() {
        let parsed =
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what")
                .unwrap();
        assert!(!parsed.sampled());
        assert_eq!(parsed.span_id_hex(), "00f067aa0ba902b7");
    }
}
