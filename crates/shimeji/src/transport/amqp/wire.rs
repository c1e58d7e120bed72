//! Nameko's wire format: names, headers, bodies. Pure functions, no I/O, so
//! they can be checked against the messages captured from Nameko itself.

use amqprs::{BasicProperties, FieldArray, FieldName, FieldTable, FieldValue};
use serde_json::{json, Map, Number, Value};

use crate::context::WorkerContext;
use crate::error::RemoteError;

/// Nameko's default RPC exchange.
pub const DEFAULT_RPC_EXCHANGE: &str = "nameko-rpc";
/// Header prefix of context data.
pub const HEADER_PREFIX: &str = "nameko.";
/// The header that carries the W3C trace context. Nameko services pass
/// every `nameko.*` header on to the calls they make, so a trace survives
/// Python hops.
pub const TRACEPARENT_HEADER: &str = "nameko.traceparent";
/// The content type of every body shimeji sends.
pub const CONTENT_TYPE: &str = "application/json";
/// The content encoding of every body shimeji sends.
pub const CONTENT_ENCODING: &str = "utf-8";
/// Reply queues expire five minutes after their last consumer left (ms).
pub const REPLY_QUEUE_EXPIRES_MS: i32 = 300_000;

/// The queue a service's RPC requests wait in.
pub fn rpc_queue(service: &str) -> String {
    format!("rpc-{service}")
}

/// The binding key of a service's RPC queue.
pub fn rpc_binding_key(service: &str) -> String {
    format!("{service}.*")
}

/// The exchange a service's events are published to.
pub fn events_exchange(source: &str) -> String {
    format!("{source}.events")
}

/// The reply queue of a client named `owner` with routing key `key`.
pub fn reply_queue(owner: &str, key: &str) -> String {
    format!("rpc.reply-{owner}-{key}")
}

/// `(service, method)` from a request's routing key `service.method`.
pub fn split_routing_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('.')
}

/// JSON → an AMQP field value, as py-amqp encodes them.
pub fn to_field(value: &Value) -> FieldValue {
    match value {
        Value::Null => FieldValue::V,
        Value::Bool(b) => FieldValue::t(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => FieldValue::l(i),
            (None, Some(f)) => FieldValue::d(f),
            _ => FieldValue::S(n.to_string().try_into().unwrap_or_default()),
        },
        Value::String(s) => long_str(s),
        Value::Array(items) => {
            let items: Vec<FieldValue> = items.iter().map(to_field).collect();
            FieldValue::A(items.try_into().unwrap_or_else(|_| FieldArray::new()))
        }
        Value::Object(map) => {
            let mut table = FieldTable::new();
            for (k, v) in map {
                if let Ok(name) = FieldName::try_from(k.as_str()) {
                    table.insert(name, to_field(v));
                }
            }
            FieldValue::F(table)
        }
    }
}

fn long_str(s: &str) -> FieldValue {
    match s.try_into() {
        Ok(long) => FieldValue::S(long),
        Err(_) => FieldValue::V,
    }
}

/// An AMQP field value → JSON.
pub fn from_field(value: &FieldValue) -> Value {
    match value {
        FieldValue::t(b) => Value::Bool(*b),
        FieldValue::b(i) => json!(i),
        FieldValue::B(i) => json!(i),
        FieldValue::s(i) => json!(i),
        FieldValue::u(i) => json!(i),
        FieldValue::I(i) => json!(i),
        FieldValue::i(i) => json!(i),
        FieldValue::l(i) => json!(i),
        FieldValue::f(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        FieldValue::d(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        FieldValue::D(d) => Value::String(format!("{d:?}")),
        FieldValue::S(s) => {
            let s: &str = s.as_ref();
            Value::String(s.to_string())
        }
        FieldValue::A(items) => {
            let items: Vec<FieldValue> = items.clone().into();
            Value::Array(items.iter().map(from_field).collect())
        }
        FieldValue::T(t) => json!(t),
        FieldValue::F(table) => Value::Object(
            table
                .as_ref()
                .iter()
                .map(|(k, v)| (k.to_string(), from_field(v)))
                .collect(),
        ),
        FieldValue::V => Value::Null,
        FieldValue::x(bytes) => {
            let bytes: Vec<u8> = bytes.clone().into();
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
    }
}

/// The headers a request or an event carries for a caller's context:
/// `nameko.call_id_stack`, `nameko.traceparent` and every context data key
/// as `nameko.<key>`.
pub fn context_headers(context: Option<&WorkerContext>) -> FieldTable {
    let mut headers = FieldTable::new();
    let Some(ctx) = context else {
        return headers;
    };
    let stack = ctx.call_id_stack();
    if !stack.is_empty() {
        let items: Vec<FieldValue> = stack.iter().map(|s| long_str(s)).collect();
        if let (Ok(name), Ok(array)) = (
            FieldName::try_from("nameko.call_id_stack"),
            FieldArray::try_from(items),
        ) {
            headers.insert(name, FieldValue::A(array));
        }
    }
    if let Some(trace) = ctx.trace_parent() {
        if let Ok(name) = FieldName::try_from(TRACEPARENT_HEADER) {
            headers.insert(name, long_str(&trace.to_string()));
        }
    }
    for (key, value) in ctx.data_map() {
        if key == "call_id_stack" {
            continue;
        }
        match FieldName::try_from(format!("{HEADER_PREFIX}{key}")) {
            Ok(name) => {
                headers.insert(name, to_field(value));
            }
            Err(_) => tracing::warn!(
                key,
                "context data key too long for an AMQP header: not sent"
            ),
        }
    }
    headers
}

/// The caller's context from a message's headers: `nameko.call_id_stack`
/// (a list, or a lone string) and every other header as context data, its
/// `nameko.` prefix stripped.
pub fn context_from_headers(headers: Option<&FieldTable>) -> WorkerContext {
    let mut stack = Vec::new();
    let mut data = Map::new();
    if let Some(headers) = headers {
        for (name, value) in headers.as_ref() {
            let name: &str = name.as_ref();
            let key = name.strip_prefix(HEADER_PREFIX).unwrap_or(name);
            if key == "call_id_stack" {
                match from_field(value) {
                    Value::Array(items) => {
                        stack.extend(items.into_iter().filter_map(|v| match v {
                            Value::String(s) => Some(s),
                            _ => None,
                        }))
                    }
                    Value::String(s) => stack.push(s),
                    _ => {}
                }
            } else {
                data.insert(key.to_string(), from_field(value));
            }
        }
    }
    WorkerContext::from_wire(stack, data)
}

/// Properties of a persistent message (delivery mode 2), as Nameko sends them.
pub fn properties(
    headers: Option<FieldTable>,
    correlation_id: Option<&str>,
    reply_to: Option<&str>,
) -> BasicProperties {
    properties_with_mode(2, headers, correlation_id, reply_to)
}

/// The delivery mode of a persistent (2) or transient (1) message.
pub fn delivery_mode(persistent: bool) -> u8 {
    if persistent {
        2
    } else {
        1
    }
}

/// Properties with delivery mode `mode`: 2 persistent, 1 transient.
pub fn properties_with_mode(
    mode: u8,
    headers: Option<FieldTable>,
    correlation_id: Option<&str>,
    reply_to: Option<&str>,
) -> BasicProperties {
    let mut props = BasicProperties::default();
    props
        .with_content_type(CONTENT_TYPE)
        .with_content_encoding(CONTENT_ENCODING)
        .with_delivery_mode(mode)
        .with_priority(0);
    props.with_headers(headers.unwrap_or_default());
    if let Some(id) = correlation_id {
        props.with_correlation_id(id);
    }
    if let Some(to) = reply_to {
        props.with_reply_to(to);
    }
    props.finish()
}

/// A reply body: `{"result": …, "error": null}` or `{"result": null, "error": {…}}`.
pub fn reply_body(result: Result<Value, RemoteError>) -> Vec<u8> {
    let body = match result {
        Ok(value) => json!({ "result": value, "error": null }),
        Err(error) => json!({ "result": null, "error": error }),
    };
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"result\": null, \"error\": null}".to_vec())
}

/// A reply body decoded: the result, or the remote error.
pub fn decode_reply(body: &[u8]) -> Result<Result<Value, RemoteError>, String> {
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(default)]
        result: Value,
        #[serde(default)]
        error: Option<RemoteError>,
    }
    let reply: Reply = serde_json::from_slice(body)
        .map_err(|e| format!("reply is not a Nameko reply body: {e}"))?;
    Ok(match reply.error {
        Some(error) => Err(error),
        None => Ok(reply.result),
    })
}

/// Why an incoming request cannot be served, and whether it can be answered.
#[derive(Debug)]
pub struct Refusal {
    /// Where to send the error, when the request said (reply_to, correlation_id).
    pub reply: Option<(String, Option<String>)>,
    /// The error to answer with, or to log.
    pub error: Box<RemoteError>,
}

/// A request taken off the wire and checked.
#[derive(Debug)]
pub struct Incoming {
    /// The method, from the routing key.
    pub method: String,
    /// The body, parsed.
    pub body: Value,
    /// The caller's context.
    pub context: WorkerContext,
    /// The routing key to reply to.
    pub reply_to: String,
    /// The correlation id to reply with.
    pub correlation_id: Option<String>,
}

/// Checks an incoming request: reply address, headers, size, content type,
/// JSON. `body_size` is the size the message's content header announced:
/// a body over `max_size` is refused on it (the transport never keeps such a
/// body, and passes an empty `body`).
pub fn parse_request(
    routing_key: &str,
    props: &BasicProperties,
    body: &[u8],
    body_size: u64,
    max_size: usize,
) -> Result<Incoming, Refusal> {
    let correlation_id = props.correlation_id().cloned();
    let Some(reply_to) = props.reply_to().cloned() else {
        return Err(Refusal {
            reply: None,
            error: Box::new(RemoteError::malformed_request(
                "request has no `reply_to`: there is nowhere to answer",
            )),
        });
    };
    let refuse = |error: RemoteError| Refusal {
        reply: Some((reply_to.clone(), correlation_id.clone())),
        error: Box::new(error),
    };
    if props.headers_malformed() {
        return Err(refuse(RemoteError::malformed_request(format!(
            "request headers are not a valid AMQP field table (or nest tables deeper than {} levels)",
            amqp_serde::MAX_NESTING
        ))));
    }
    let size = body_size.max(body.len() as u64);
    if size > max_size as u64 {
        return Err(refuse(RemoteError::malformed_request(format!(
            "request body of {size} bytes is over the limit of {max_size} bytes"
        ))));
    }
    match props.content_type().map(String::as_str) {
        None | Some(CONTENT_TYPE) | Some("application/x-json") => {}
        Some(other) => {
            return Err(refuse(RemoteError::malformed_request(format!(
                "unsupported content type `{other}`: shimeji accepts `{CONTENT_TYPE}`"
            ))))
        }
    }
    let Some((_, method)) = split_routing_key(routing_key) else {
        return Err(refuse(RemoteError::malformed_request(format!(
            "routing key `{routing_key}` is not `service.method`"
        ))));
    };
    let body: Value = serde_json::from_slice(body).map_err(|e| {
        refuse(RemoteError::malformed_request(format!(
            "request body is not valid JSON: {e}"
        )))
    })?;
    Ok(Incoming {
        method: method.to_string(),
        body,
        context: context_from_headers(props.headers()),
        reply_to,
        correlation_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(rpc_queue("greeter"), "rpc-greeter");
        assert_eq!(rpc_binding_key("greeter"), "greeter.*");
        assert_eq!(events_exchange("greeter"), "greeter.events");
        assert_eq!(reply_queue("alpha", "681b"), "rpc.reply-alpha-681b");
        assert_eq!(split_routing_key("alpha.add"), Some(("alpha", "add")));
    }

    #[test]
    fn headers_round_trip() {
        let ctx = WorkerContext::for_worker(
            "a",
            "go",
            Some(
                WorkerContext::root()
                    .with_data("user_id", "u1")
                    .with_data("n", 3),
            ),
            10,
        );
        let headers = context_headers(Some(&ctx));
        let back = context_from_headers(Some(&headers));
        assert_eq!(back.call_id_stack(), ctx.call_id_stack());
        assert_eq!(back.data("user_id"), Some(&json!("u1")));
        assert_eq!(back.data("n"), Some(&json!(3)));
    }

    /// The property bytes of a content header carrying a correlation id,
    /// a reply address and a headers table whose key `a` holds `depth`
    /// nested tables (or arrays), built iteratively: decoding them must not
    /// recurse that deep.
    fn deep_properties(depth: usize, arrays: bool) -> Vec<u8> {
        let step = if arrays { 5 } else { 7 };
        let mut bytes = vec![0x26, 0x00]; // headers, correlation_id, reply_to
                                          // the headers table: one entry `a` → the nest
        bytes.extend_from_slice(&((3 + step * depth + 4) as u32).to_be_bytes());
        bytes.extend_from_slice(&[1, b'a', if arrays { b'A' } else { b'F' }]);
        for level in 0..depth {
            bytes.extend_from_slice(&((step * (depth - level)) as u32).to_be_bytes());
            if arrays {
                bytes.push(b'A');
            } else {
                bytes.extend_from_slice(&[1, b'a', b'F']);
            }
        }
        bytes.extend_from_slice(&0u32.to_be_bytes());
        for s in ["corr-1", "reply-here"] {
            bytes.push(s.len() as u8);
            bytes.extend_from_slice(s.as_bytes());
        }
        bytes
    }

    #[test]
    fn headers_nested_too_deep_make_a_malformed_request_not_a_crash() {
        for depth in [5_000, 100_000] {
            for arrays in [false, true] {
                let props = BasicProperties::decode(&deep_properties(depth, arrays))
                    .expect("the other properties decode");
                assert!(props.headers_malformed(), "depth {depth}");
                assert!(props.headers().is_none());
                assert_eq!(props.reply_to().map(String::as_str), Some("reply-here"));
                let refusal = parse_request("svc.m", &props, b"{}", 2, 1024)
                    .expect_err("refused as malformed");
                assert_eq!(refusal.error.exc_type, "MalformedRequest");
                assert!(
                    refusal.error.value.contains("headers"),
                    "{}",
                    refusal.error.value
                );
                assert_eq!(
                    refusal.reply,
                    Some(("reply-here".to_string(), Some("corr-1".to_string())))
                );
            }
        }
    }

    #[test]
    fn headers_nested_within_the_limit_still_decode() {
        let depth = 100;
        let props = BasicProperties::decode(&deep_properties(depth, false)).unwrap();
        assert!(!props.headers_malformed());
        let mut value = props
            .headers()
            .and_then(|h| h.get(&"a".try_into().unwrap()));
        let mut seen = 0;
        while let Some(FieldValue::F(table)) = value {
            seen += 1;
            value = table.get(&"a".try_into().unwrap());
        }
        assert_eq!(seen, depth + 1, "every level is there");
    }

    #[test]
    fn a_table_shorter_than_its_entries_is_malformed_not_a_panic() {
        // The headers table says 4 bytes; its entry `a` → "abc" takes 9.
        let mut bytes = vec![0x22, 0x00]; // headers, reply_to
        bytes.extend_from_slice(&4u32.to_be_bytes());
        bytes.extend_from_slice(&[1, b'a', b'S', 0, 0, 0, 3, b'a', b'b', b'c']);
        bytes.extend_from_slice(&[1, b'r']);
        // whatever it decodes to, it must not panic
        let _ = BasicProperties::decode(&bytes);
        // a shorter nested table inside a well-sized outer one
        let mut bytes = vec![0x22, 0x00];
        let inner = [1u8, b'b', b'S', 0, 0, 0, 3, b'x', b'y', b'z'];
        bytes.extend_from_slice(&((3 + 4 + inner.len()) as u32).to_be_bytes());
        bytes.extend_from_slice(&[1, b'a', b'F']);
        bytes.extend_from_slice(&2u32.to_be_bytes()); // says 2, holds 10
        bytes.extend_from_slice(&inner);
        bytes.extend_from_slice(&[1, b'r']);
        let props = BasicProperties::decode(&bytes).expect("the rest decodes");
        assert!(props.headers_malformed());
        assert_eq!(props.reply_to().map(String::as_str), Some("r"));
    }

    #[test]
    fn a_header_of_an_unknown_type_is_malformed_not_a_panic() {
        // headers: `a` → a value tagged 0x20, which no AMQP type has
        let mut bytes = vec![0x22, 0x00]; // headers, reply_to
        bytes.extend_from_slice(&4u32.to_be_bytes());
        bytes.extend_from_slice(&[1, b'a', 0x20, 0]);
        bytes.extend_from_slice(&[1, b'r']);
        let props = BasicProperties::decode(&bytes).expect("the rest decodes");
        assert!(props.headers_malformed());
        assert_eq!(props.reply_to().map(String::as_str), Some("r"));
    }

    #[test]
    fn a_body_announced_over_the_limit_is_refused_on_its_size() {
        let mut props = BasicProperties::default();
        props.with_reply_to("r").with_correlation_id("c");
        // the transport passes no bytes for a body it did not keep
        let refusal = parse_request("svc.m", &props, b"", 5_000_000, 1024).unwrap_err();
        assert!(
            refusal.error.value.contains("5000000 bytes"),
            "{}",
            refusal.error.value
        );
        assert!(parse_request("svc.m", &props, b"{}", 2, 1024).is_ok());
    }

    #[test]
    fn replies() {
        assert_eq!(
            decode_reply(&reply_body(Ok(json!("hi")))).unwrap().unwrap(),
            json!("hi")
        );
        let err = decode_reply(&reply_body(Err(RemoteError::method_not_found("x"))))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.exc_type, "MethodNotFound");
        assert!(decode_reply(b"nope").is_err());
    }
}
