//! The Nameko wire format, checked against messages captured from Nameko
//! 2.14.1 on RabbitMQ (`tests/vectors/`, frame bytes included; its README
//! says how they were captured): shimeji decodes what Nameko sends, and
//! encodes properties byte for byte as Nameko does.
//!
//! Nameko publishes its replies persistent; shimeji does so with
//! `persistent_replies: true`, and by default publishes them transient,
//! every other property the same. Both encodings are checked here; the
//! `amqp_claims` tests check that the transport really sends each.

use amqprs::BasicProperties;
use serde_json::Value;
use shimeji::context::WorkerContext;
use shimeji::transport::amqp::wire;
use shimeji::CallError;

struct Captured {
    file: String,
    exchange: String,
    routing_key: String,
    /// The encoded properties, from the content header frame.
    props_bytes: Vec<u8>,
    body: Vec<u8>,
    json: Value,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Every `basic.publish` in the vector files.
fn publishes() -> Vec<Captured> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("vectors")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        for m in doc["messages"].as_array().into_iter().flatten() {
            if m["method"] != "basic.publish" {
                continue;
            }
            // Header frame: type(1) channel(2) size(4) class(2) weight(2) body size(8), then the
            // properties, then the frame end octet.
            let frame = hex(m["header_frame_hex"].as_str().unwrap());
            out.push(Captured {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                exchange: m["args"]["exchange"].as_str().unwrap().to_string(),
                routing_key: m["args"]["routing_key"].as_str().unwrap().to_string(),
                props_bytes: frame[19..frame.len() - 1].to_vec(),
                body: m["body"].as_str().unwrap().as_bytes().to_vec(),
                json: m.clone(),
            });
        }
    }
    assert!(out.len() > 20, "vectors missing: {}", out.len());
    out
}

fn decode_props(c: &Captured) -> BasicProperties {
    amqp_serde::from_bytes(&c.props_bytes)
        .unwrap_or_else(|e| panic!("{}: cannot decode properties: {e}", c.file))
}

fn is_request(c: &Captured) -> bool {
    c.exchange == "nameko-rpc" && c.routing_key.contains('.')
}

fn is_reply(c: &Captured) -> bool {
    c.exchange == "nameko-rpc" && !c.routing_key.contains('.')
}

fn captured_stack(c: &Captured) -> Vec<String> {
    match &c.json["properties"]["headers"]["nameko.call_id_stack"] {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

#[test]
fn requests_from_nameko_decode() {
    let mut seen = 0;
    for c in publishes().iter().filter(|c| is_request(c)) {
        let props = decode_props(c);
        let size = c.body.len() as u64;
        let incoming = wire::parse_request(&c.routing_key, &props, &c.body, size, 1 << 24)
            .unwrap_or_else(|e| panic!("{}: refused: {e:?}", c.file));
        assert_eq!(
            Some(incoming.method.as_str()),
            c.routing_key.split('.').nth(1),
            "{}",
            c.file
        );
        assert_eq!(incoming.body, c.json["body_json"], "{}", c.file);
        assert_eq!(
            incoming.context.call_id_stack(),
            captured_stack(c),
            "{}",
            c.file
        );
        // Every other header is context data, its `nameko.` prefix stripped.
        for (key, value) in c.json["properties"]["headers"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let key = key.strip_prefix("nameko.").unwrap_or(key);
            if key != "call_id_stack" {
                assert_eq!(incoming.context.data(key), Some(value), "{}: {key}", c.file);
            }
        }
        seen += 1;
    }
    assert!(seen >= 15, "{seen} requests");
}

#[test]
fn requests_encode_as_nameko_does() {
    let mut seen = 0;
    for c in publishes().iter().filter(|c| is_request(c)) {
        let captured = decode_props(c);
        // Rebuild the caller's context from what it sent, and encode it again.
        let sent = wire::context_from_headers(captured.headers());
        let only_stack = c.json["properties"]["headers"]
            .as_object()
            .is_some_and(|h| h.len() == 1);
        if !only_stack || captured.priority().is_none() {
            continue; // several headers: a hash map's order; raw clients: other flags
        }
        let ours = wire::properties(
            Some(wire::context_headers(Some(&sent))),
            captured.correlation_id().map(String::as_str),
            captured.reply_to().map(String::as_str),
        );
        assert_eq!(
            amqp_serde::to_bytes(&ours).unwrap(),
            c.props_bytes,
            "{}: {}",
            c.file,
            c.routing_key
        );
        seen += 1;
    }
    assert!(seen >= 10, "{seen} requests");
}

#[test]
fn replies_decode_and_encode_as_nameko_does() {
    let mut seen = 0;
    for c in publishes().iter().filter(|c| is_reply(c)) {
        let captured = decode_props(c);
        let reply = wire::decode_reply(&c.body).unwrap_or_else(|e| panic!("{}: {e}", c.file));
        let expected = &c.json["body_json"];
        match reply {
            Ok(result) => {
                assert_eq!(&result, &expected["result"], "{}", c.file);
                // Our encoding of the same result reads back the same.
                let ours: Value = serde_json::from_slice(&wire::reply_body(Ok(result))).unwrap();
                assert_eq!(&ours, expected, "{}", c.file);
            }
            Err(error) => {
                assert_eq!(error.exc_type, expected["error"]["exc_type"], "{}", c.file);
                assert_eq!(error.exc_path, expected["error"]["exc_path"], "{}", c.file);
                let err = CallError::from_remote(error.clone());
                assert!(err.is(expected["error"]["exc_type"].as_str().unwrap()));
                let ours: Value = serde_json::from_slice(&wire::reply_body(Err(error))).unwrap();
                assert_eq!(&ours, expected, "{}", c.file);
            }
        }
        let correlation_id = captured.correlation_id().map(String::as_str);
        // `persistent_replies: true`: byte for byte what Nameko sends.
        assert_eq!(captured.delivery_mode(), Some(2), "{}", c.file);
        let persistent =
            wire::properties_with_mode(wire::delivery_mode(true), None, correlation_id, None);
        assert_eq!(
            amqp_serde::to_bytes(&persistent).unwrap(),
            c.props_bytes,
            "{}: persistent reply properties",
            c.file
        );
        // The default: the same properties, delivery mode 1 (transient).
        let transient =
            wire::properties_with_mode(wire::delivery_mode(false), None, correlation_id, None);
        let mut expected = captured.clone();
        let expected = expected.with_delivery_mode(1).finish();
        assert_eq!(
            amqp_serde::to_bytes(&transient).unwrap(),
            amqp_serde::to_bytes(&expected).unwrap(),
            "{}: transient reply properties",
            c.file
        );
        let decoded: BasicProperties =
            amqp_serde::from_bytes(&amqp_serde::to_bytes(&transient).unwrap()).unwrap();
        assert_eq!(decoded.delivery_mode(), Some(1), "{}", c.file);
        seen += 1;
    }
    assert!(seen >= 10, "{seen} replies");
}

#[test]
fn events_decode_and_encode_as_nameko_does() {
    let mut seen = 0;
    for c in publishes()
        .iter()
        .filter(|c| c.exchange.ends_with(".events"))
    {
        let captured = decode_props(c);
        let ctx = wire::context_from_headers(captured.headers());
        assert_eq!(ctx.call_id_stack(), captured_stack(c), "{}", c.file);
        assert_eq!(
            c.exchange,
            wire::events_exchange(c.exchange.trim_end_matches(".events"))
        );
        let payload: Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(payload, c.json["body_json"]);
        let ours = wire::properties(Some(wire::context_headers(Some(&ctx))), None, None);
        assert_eq!(
            amqp_serde::to_bytes(&ours).unwrap(),
            c.props_bytes,
            "{}: event properties",
            c.file
        );
        seen += 1;
    }
    assert!(seen >= 4, "{seen} events");
}

#[test]
fn a_worker_sends_its_stack_capped_like_nameko() {
    // The truncation vector: every hop's stack, as Nameko sent it, is what a
    // shimeji worker in the same place would send.
    let hops: Vec<Vec<String>> = publishes()
        .iter()
        .filter(|c| c.file == "rpc_call_id_stack_truncation.json" && is_request(c))
        .map(captured_stack)
        .collect();
    assert!(hops.len() >= 12);
    for pair in hops.windows(2) {
        let caller = WorkerContext::from_wire(pair[0].clone(), Default::default());
        let worker = WorkerContext::for_worker("deep", "recurse", Some(caller), 10);
        let mut ours = worker.call_id_stack();
        let mut theirs = pair[1].clone();
        // The last entry is the worker's own (random) call id.
        assert!(ours.pop().unwrap().starts_with("deep.recurse."));
        assert!(theirs.pop().unwrap().starts_with("deep.recurse."));
        assert_eq!(ours, theirs);
        assert!(pair[1].len() <= 11);
    }
}
