//! An AMQP message as a peer can send it, decoded the way the transport
//! decodes it: content-header property bytes → `BasicProperties::decode`
//! (which leaves out a headers table it cannot decode and says so), then a
//! request (`wire::parse_request`), an event's context
//! (`wire::context_from_headers`) and a reply body (`wire::decode_reply`).
//!
//! Input: `[u32 LE properties length][properties][u8 routing key length]
//! [routing key][body]`; a length longer than what is left takes the rest.
//! The first byte of the input also picks the size limit (bit 0: 16 bytes,
//! otherwise 1 MiB).
//!
//! Checked besides "no crash": a refusal is a `MalformedRequest` that answers
//! the `reply_to` when there is one; an accepted request holds exactly the
//! routing key's method, the parsed body and the reply address; a context
//! survives being sent on (`context_headers` → `context_from_headers`); a
//! reply body that decodes re-encodes to the same result.
#![no_main]

use amqprs::BasicProperties;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shimeji::transport::amqp::wire;
use shimeji::WorkerContext;

const LARGE_LIMIT: usize = 1 << 20;
const SMALL_LIMIT: usize = 16;

/// Splits off `n` bytes, or all that is left.
fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(input.len());
    let (head, tail) = input.split_at(n);
    *input = tail;
    head
}

/// JSON with every number as an `f64`: AMQP field values carry integers
/// wider than `i64` only as doubles, so that is the precision a round trip
/// keeps.
fn numbers_as_f64(value: &Value) -> Value {
    match value {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_f64).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A context sent on to the next service comes back the same.
fn check_context_round_trip(ctx: &WorkerContext) {
    let headers = wire::context_headers(Some(ctx));
    let back = wire::context_from_headers(Some(&headers));
    assert_eq!(back.call_id_stack(), ctx.call_id_stack(), "call_id_stack");
    assert_eq!(back.trace_parent(), ctx.trace_parent(), "traceparent");
    for (key, value) in ctx.data_map() {
        if key == "call_id_stack" {
            continue;
        }
        // Documented: a key too long for an AMQP header name is not sent.
        if wire::HEADER_PREFIX.len() + key.len() > 255 {
            assert!(back.data(key).is_none(), "over-long key {key:?} was sent");
            continue;
        }
        let got = back
            .data(key)
            .unwrap_or_else(|| panic!("context data key {key:?} lost on the way"));
        assert_eq!(
            numbers_as_f64(got),
            numbers_as_f64(value),
            "context data {key:?} changed on the way"
        );
    }
}

fn check_request(routing_key: &str, props: &BasicProperties, body: &[u8], limit: usize) {
    let reply_to = props.reply_to().cloned();
    let correlation_id = props.correlation_id().cloned();
    let size = body.len() as u64;
    match wire::parse_request(routing_key, props, body, size, limit) {
        Err(refusal) => {
            assert_eq!(refusal.error.exc_type, "MalformedRequest", "{refusal:?}");
            match &reply_to {
                None => assert!(
                    refusal.reply.is_none(),
                    "answers a request with no reply_to"
                ),
                Some(to) => assert_eq!(
                    refusal.reply,
                    Some((to.clone(), correlation_id.clone())),
                    "a refusal must answer the request's reply_to"
                ),
            }
        }
        Ok(incoming) => {
            assert!(body.len() <= limit, "accepted a body over the limit");
            assert!(!props.headers_malformed(), "accepted malformed headers");
            assert!(matches!(
                props.content_type().map(String::as_str),
                None | Some("application/json") | Some("application/x-json")
            ));
            let method = routing_key.split_once('.').map(|(_, m)| m);
            assert_eq!(Some(incoming.method.as_str()), method);
            let parsed: Value = serde_json::from_slice(body).expect("accepted invalid JSON");
            assert_eq!(incoming.body, parsed);
            assert_eq!(Some(&incoming.reply_to), reply_to.as_ref());
            assert_eq!(incoming.correlation_id, correlation_id);
            check_context_round_trip(&incoming.context);
        }
    }
}

fn check_reply(body: &[u8]) {
    if let Ok(result) = wire::decode_reply(body) {
        let again = wire::decode_reply(&wire::reply_body(result.clone()))
            .expect("a reply we encode must decode");
        assert_eq!(again, result, "reply round trip");
    }
}

fuzz_target!(|data: &[u8]| {
    let limit = match data.first() {
        Some(b) if b & 1 == 1 => SMALL_LIMIT,
        _ => LARGE_LIMIT,
    };
    let mut input = data;
    let len_bytes = take(&mut input, 4);
    let mut len = [0u8; 4];
    len[..len_bytes.len()].copy_from_slice(len_bytes);
    let props_bytes = take(&mut input, u32::from_le_bytes(len) as usize);
    let key_len = take(&mut input, 1).first().copied().unwrap_or(0);
    let routing_key = String::from_utf8_lossy(take(&mut input, key_len as usize)).into_owned();
    let body = input;

    // The reply path does not depend on the properties.
    check_reply(body);

    let Ok(props) = BasicProperties::decode(props_bytes) else {
        return;
    };
    // The event path: the context of an event's handler.
    let ctx = wire::context_from_headers(props.headers());
    check_context_round_trip(&ctx);
    // The request path.
    check_request(&routing_key, &props, body, limit);
});
