//! Log lines that say which worker wrote them (feature `cli`).
//!
//! [`init`] installs a `tracing` subscriber writing to stderr, as text or
//! as one JSON object per line. Either way every line written while an
//! entrypoint runs carries the worker's identity, taken from its
//! [`WorkerContext`](crate::WorkerContext): `service`, `entrypoint`,
//! `call_id`, `parent_call_id`, `request_id` (the root of the call id stack:
//! the `X-Request-Id` of the HTTP request that started the chain, or its
//! first call id) and `trace_id`. Lines of one request can be joined on
//! `request_id` or `trace_id` across every service it touched.
//!
//! A JSON line:
//!
//! ```text
//! {"timestamp":"2026-11-23T10:15:02.113Z","level":"INFO","target":"observability",
//!  "fields":{"message":"order placed","order":17},"service":"orders","entrypoint":"place",
//!  "call_id":"orders.place.5b1c…","parent_call_id":"req-42","request_id":"req-42",
//!  "trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}
//! ```
//!
//! The per-entrypoint `tracing` span (target [`ENTRYPOINT_SPAN_TARGET`],
//! fields `service`, `entrypoint`, `call_id`, `parent_call_id`) is there for
//! other subscribers (an OpenTelemetry layer, say); these formats take the
//! same facts from the worker context instead, so that logging costs
//! nothing per call while nothing is logged.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Format, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of the span every entrypoint run opens.
pub const ENTRYPOINT_SPAN_TARGET: &str = "shimeji::entrypoint";

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    ///
    /// Its keys: `timestamp`, `level`, `target`, `fields` (the message
    /// among them), the worker's identity (see the [module docs](self)) and
    /// `spans` (other spans, outermost first, each its `name` and fields).
    Json,
}

/// A log filter that does not parse: `level` is neither a level nor
/// `tracing` filter directives.
#[derive(Debug, thiserror::Error)]
#[error("log level `{level}`: {message}")]
pub struct BadLevel {
    /// What was given.
    pub level: String,
    /// Why it does not parse.
    pub message: String,
}

/// Installs the process's subscriber: stderr, `format`, at `level` (a level
/// such as `info`, or directives such as `info,shimeji=debug`). Only the
/// first call in a process installs anything; a subscriber the program
/// installed itself stays.
///
/// ```
/// use shimeji::logging::{init, LogFormat};
///
/// init("info", LogFormat::Json).unwrap();
/// assert!(init("shimeji=loud", LogFormat::Json).is_err());
/// ```
pub fn init(level: &str, format: LogFormat) -> Result<(), BadLevel> {
    use std::sync::OnceLock;
    use tracing_subscriber::util::SubscriberInitExt;

    static INSTALLED: OnceLock<()> = OnceLock::new();
    let subscriber = subscriber(level, format, std::io::stderr)?;
    INSTALLED.get_or_init(|| {
        // An error means a subscriber is already installed: keep it.
        let _ = subscriber.try_init();
    });
    Ok(())
}

/// The subscriber [`init`] installs, writing to `writer` instead of stderr
/// (for tests, or to send lines elsewhere).
pub fn subscriber<W>(
    level: &str,
    format: LogFormat,
    writer: W,
) -> Result<Box<dyn Subscriber + Send + Sync>, BadLevel>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let filter = EnvFilter::builder().parse(level).map_err(|e| BadLevel {
        level: level.to_string(),
        message: e.to_string(),
    })?;
    // The worker's identity comes from its context: the entrypoint span is
    // not needed here, and not building it keeps calls cheap.
    let no_entrypoint_spans =
        filter_fn(|meta| !(meta.is_span() && meta.target() == ENTRYPOINT_SPAN_TARGET));
    let filter = filter.and(no_entrypoint_spans);
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    Ok(match format {
        LogFormat::Text => Box::new(
            tracing_subscriber::registry().with(
                layer
                    .event_format(TextFormat(Format::default().with_ansi(false)))
                    .with_filter(filter),
            ),
        ),
        LogFormat::Json => Box::new(
            tracing_subscriber::registry().with(
                layer
                    .fmt_fields(JsonFields)
                    .event_format(JsonFormat)
                    .with_filter(filter),
            ),
        ),
    })
}

/// The identity of the worker running on this task, as log keys.
fn worker_fields() -> Option<Map<String, Value>> {
    let ctx = crate::context::current()?;
    let mut fields = Map::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            fields.insert(key.into(), value.into());
        }
    };
    put("service", ctx.service().map(str::to_string));
    put("entrypoint", ctx.entrypoint().map(str::to_string));
    put("call_id", ctx.call_id());
    put("parent_call_id", ctx.parent_call_id());
    put("request_id", ctx.call_id_stack().into_iter().next());
    put("trace_id", ctx.trace_id());
    put("span_id", ctx.span_id());
    Some(fields)
}

/// Text lines: tracing's own format, the worker's identity appended.
struct TextFormat(Format);

impl<S> FormatEvent<S, DefaultFields> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, DefaultFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        match worker_fields() {
            None => writeln!(writer, "{line}"),
            Some(fields) => {
                write!(writer, "{line}")?;
                for key in ["call_id", "request_id", "trace_id"] {
                    if let Some(Value::String(v)) = fields.get(key) {
                        write!(writer, " {key}={v}")?;
                    }
                }
                writeln!(writer)
            }
        }
    }
}

/// Collects fields into a JSON object.
#[derive(Default)]
struct Collect(Map<String, Value>);

impl Visit for Collect {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Formats span fields as a JSON object, so events can embed them.
struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut collect = Collect::default();
        fields.record(&mut collect);
        write!(writer, "{}", Value::Object(collect.0))
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut collect = Collect(serde_json::from_str(&current.fields).unwrap_or_default());
        fields.record(&mut collect);
        current.fields = Value::Object(collect.0).to_string();
        Ok(())
    }
}

/// Writes each event as one JSON object on its own line, straight into the
/// line: no map is built, and a span's fields (kept as JSON text) are
/// copied in, not parsed again.
struct JsonFormat;

impl<S> FormatEvent<S, JsonFields> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(320);
        line.push_str("{\"timestamp\":\"");
        SystemTime.format_time(&mut Writer::new(&mut JsonEscape(&mut line)))?;
        line.push_str("\",\"level\":");
        push_json_str(&mut line, event.metadata().level().as_str());
        line.push_str(",\"target\":");
        push_json_str(&mut line, event.metadata().target());
        line.push_str(",\"fields\":{");
        event.record(&mut JsonLineFields {
            line: &mut line,
            first: true,
        });
        line.push('}');
        crate::context::with_current(|worker| push_worker(&mut line, worker));
        if let Some(scope) = ctx.event_scope() {
            let mut spans = scope.from_root().peekable();
            if spans.peek().is_some() {
                line.push_str(",\"spans\":[");
                for (i, span) in spans.enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    line.push_str("{\"name\":");
                    push_json_str(&mut line, span.name());
                    let extensions = span.extensions();
                    // The span's fields are a JSON object's text: its
                    // members go in after the name.
                    let members = extensions
                        .get::<FormattedFields<JsonFields>>()
                        .and_then(|f| f.fields.strip_prefix('{'))
                        .and_then(|f| f.strip_suffix('}'))
                        .filter(|members| !members.trim().is_empty());
                    if let Some(members) = members {
                        line.push(',');
                        line.push_str(members);
                    }
                    line.push('}');
                }
                line.push(']');
            }
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// The identity of the worker that logged, as the line's top-level keys.
fn push_worker(line: &mut String, ctx: &crate::context::WorkerContext) {
    use std::fmt::Write as _;
    let put = |line: &mut String, key: &str, value: &str| {
        line.push_str(",\"");
        line.push_str(key);
        line.push_str("\":");
        push_json_str(line, value);
    };
    if let Some(service) = ctx.service() {
        put(line, "service", service);
    }
    if let Some(entrypoint) = ctx.entrypoint() {
        put(line, "entrypoint", entrypoint);
    }
    // The call id stack, read in place (no copy of it per line).
    let put_id = |line: &mut String, key: &str, index: usize| {
        if let Some(id) = ctx.stack_entry(index) {
            line.push_str(",\"");
            line.push_str(key);
            line.push_str("\":\"");
            let _ = write!(JsonEscape(line), "{id}");
            line.push('"');
        }
    };
    let len = ctx.stack_len();
    let own = usize::from(ctx.service().is_some());
    if own == 1 && len > 0 {
        put_id(line, "call_id", len - 1);
    }
    if let Some(parent) = len.checked_sub(own + 1) {
        put_id(line, "parent_call_id", parent);
    }
    if len > 0 {
        put_id(line, "request_id", 0);
    }
    if let Some(trace) = ctx.trace_parent() {
        let _ = write!(line, ",\"trace_id\":\"{:032x}\"", trace.trace_id());
        if own == 1 {
            let _ = write!(line, ",\"span_id\":\"{:016x}\"", trace.span_id());
        }
    }
}

/// Writes an event's fields as JSON members into a line.
struct JsonLineFields<'a> {
    line: &'a mut String,
    first: bool,
}

impl JsonLineFields<'_> {
    fn key(&mut self, field: &Field) -> &mut String {
        if !std::mem::take(&mut self.first) {
            self.line.push(',');
        }
        push_json_str(self.line, field.name());
        self.line.push(':');
        self.line
    }
}

impl Visit for JsonLineFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        use std::fmt::Write as _;
        let line = self.key(field);
        if value.is_finite() {
            let _ = write!(line, "{value}");
        } else {
            line.push_str("null");
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        use std::fmt::Write as _;
        let _ = write!(self.key(field), "{value}");
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        use std::fmt::Write as _;
        let _ = write!(self.key(field), "{value}");
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field)
            .push_str(if value { "true" } else { "false" });
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        push_json_str(self.key(field), value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        use std::fmt::Write as _;
        let line = self.key(field);
        line.push('"');
        let _ = write!(JsonEscape(line), "{value}");
        line.push('"');
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        use std::fmt::Write as _;
        let line = self.key(field);
        line.push('"');
        let _ = write!(JsonEscape(line), "{value:?}");
        line.push('"');
    }
}

/// Appends `s` as a JSON string, quotes included.
fn push_json_str(line: &mut String, s: &str) {
    line.push('"');
    escape_into(line, s);
    line.push('"');
}

/// Appends `s` escaped for the inside of a JSON string.
fn escape_into(line: &mut String, s: &str) {
    let mut rest = s;
    while let Some(i) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
        line.push_str(&rest[..i]);
        let mut chars = rest[i..].chars();
        match chars.next() {
            Some('"') => line.push_str("\\\""),
            Some('\\') => line.push_str("\\\\"),
            Some('\n') => line.push_str("\\n"),
            Some('\r') => line.push_str("\\r"),
            Some('\t') => line.push_str("\\t"),
            Some(c) => {
                use std::fmt::Write as _;
                let _ = write!(line, "\\u{:04x}", u32::from(c));
            }
            None => {}
        }
        rest = chars.as_str();
    }
    line.push_str(rest);
}

/// A `fmt::Write` that escapes what is written for the inside of a JSON
/// string: `Display` and `Debug` values go in with no copy of their own.
struct JsonEscape<'a>(&'a mut String);

impl fmt::Write for JsonEscape<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{self, WorkerContext};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    fn lines(format: LogFormat, work: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = subscriber("info", format, buffer.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, work);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_carry_the_worker() {
        let root = WorkerContext::from_wire(vec!["req-42".into()], Map::new());
        let worker = WorkerContext::for_worker("orders", "place", Some(root), 10);
        let text = lines(LogFormat::Json, || {
            futures::executor::block_on(context::scope(worker.clone(), async {
                tracing::info!(order = 17, "order placed");
            }));
            tracing::warn!("outside");
        });
        let mut parsed = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap());
        let inside = parsed.next().unwrap();
        assert_eq!(inside["fields"]["message"], "order placed");
        assert_eq!(inside["fields"]["order"], 17);
        assert_eq!(inside["service"], "orders");
        assert_eq!(inside["entrypoint"], "place");
        assert_eq!(inside["call_id"], worker.call_id().unwrap().as_str());
        assert_eq!(inside["parent_call_id"], "req-42");
        assert_eq!(inside["request_id"], "req-42");
        assert_eq!(inside["trace_id"], worker.trace_id().unwrap().as_str());
        let outside = parsed.next().unwrap();
        assert_eq!(outside["level"], "WARN");
        assert!(outside.get("call_id").is_none(), "{outside}");
    }

    #[test]
    fn json_lines_escape_what_they_carry() {
        let tricky = "a \"quoted\" \\ back\nslash\t\u{1}\u{7f} é ✓";
        let text = lines(LogFormat::Json, || {
            tracing::info!(
                s = tricky,
                n = -3i64,
                u = 7u64,
                f = 0.5f64,
                nan = f64::NAN,
                b = true,
                d = ?vec![tricky],
                "{tricky}"
            );
            let span = tracing::info_span!("outer", id = 9, note = tricky);
            let _entered = span.enter();
            tracing::info!("in a span");
        });
        let mut parsed = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")));
        let first = parsed.next().unwrap();
        let fields = &first["fields"];
        assert_eq!(fields["message"], tricky, "{first}");
        assert_eq!(fields["s"], tricky);
        assert_eq!(fields["n"], -3);
        assert_eq!(fields["u"], 7);
        assert_eq!(fields["f"], 0.5);
        assert_eq!(fields["nan"], Value::Null);
        assert_eq!(fields["b"], true);
        assert_eq!(fields["d"], format!("{:?}", vec![tricky]));
        assert_eq!(first["level"], "INFO");
        let second = parsed.next().unwrap();
        assert_eq!(second["spans"][0]["name"], "outer", "{second}");
        assert_eq!(second["spans"][0]["id"], 9);
        assert_eq!(second["spans"][0]["note"], tricky);
    }

    #[test]
    fn text_lines_carry_the_call_id() {
        let worker = WorkerContext::for_worker("orders", "place", None, 10);
        let text = lines(LogFormat::Text, || {
            futures::executor::block_on(context::scope(worker.clone(), async {
                tracing::info!("order placed");
            }));
        });
        assert!(text.contains("order placed"), "{text}");
        assert!(
            text.contains(&format!("call_id={}", worker.call_id().unwrap())),
            "{text}"
        );
    }

    #[test]
    fn the_entrypoint_span_is_not_built_for_these_formats() {
        let _ = lines(LogFormat::Json, || {
            let span = tracing::info_span!(target: "shimeji::entrypoint", "entrypoint");
            assert!(span.is_disabled());
            let other = tracing::info_span!("mine");
            assert!(!other.is_disabled());
        });
    }
}
