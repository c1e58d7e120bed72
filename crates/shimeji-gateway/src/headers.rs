//! The headers a proxy must change, on the way in and on the way out.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every header it
//!   names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//!   `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`,
//!   `Proxy-Authorization`) are dropped both ways; for a WebSocket upgrade
//!   `Connection: upgrade` and `Upgrade` are set again.
//! - `X-Request-Id`: the client's when it is 1 to 128 visible ASCII
//!   characters (what shimeji's HTTP entrypoints accept), else a new one;
//!   sent to the instance and returned to the client.
//! - `traceparent`: the client's when it is a valid W3C trace context,
//!   else a new sampled root (and the client's `tracestate`, which belongs
//!   to the discarded one, is dropped).
//! - `X-Forwarded-For` gets the client's address appended;
//!   `X-Forwarded-Proto` (`http`) and `X-Forwarded-Host` (the `Host`) are
//!   set when the client did not send them (a TLS terminator in front
//!   sets them).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use shimeji::trace::TraceParent;
use std::net::IpAddr;

/// The `X-Request-Id` header.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The W3C `traceparent` header.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop headers every message loses.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Whether `name` (lowercase, as a `HeaderName` holds it) is one of
/// [`HOP_BY_HOP`].
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// Drops the hop-by-hop headers, those `Connection` names first.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one pass over the names to find out.
    if !headers.keys().any(|name| is_hop_by_hop(name.as_str())) {
        return;
    }
    remove_hop_by_hop(headers);
}

/// Removes the hop-by-hop headers, known to be there.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Whether the headers ask for a WebSocket upgrade.
pub(crate) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// Whether a request id the client gave is usable.
fn usable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=128).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic)
}

/// Writes `value` as lowercase hex digits into `out` (its last
/// `out.len()` digits).
fn hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// A new request id: 32 hex digits.
fn new_request_id() -> HeaderValue {
    let mut id = [0u8; 32];
    hex(&mut id, fastrand::u128(..));
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("unknown"))
}

/// A new sampled root trace context, as a `traceparent` value.
fn new_traceparent() -> HeaderValue {
    let root = TraceParent::new_root();
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-01";
    hex(&mut value[3..35], root.trace_id());
    hex(&mut value[36..52], u128::from(root.span_id()));
    HeaderValue::from_bytes(&value).unwrap_or(HeaderValue::from_static(
        "00-00000000000000000000000000000001-0000000000000001-01",
    ))
}

/// The `X-Forwarded-For` value of a client at `ip`, made once per
/// connection.
pub(crate) fn peer_value(ip: IpAddr) -> Option<HeaderValue> {
    HeaderValue::from_str(&ip.to_string()).ok()
}

/// What [`to_upstream`] needs to know of a client's headers, found in one
/// pass over them (the first value of each, as `HeaderMap::get` gives).
#[derive(Default)]
struct Seen<'a> {
    hop_by_hop: bool,
    request_id: Option<&'a HeaderValue>,
    request_ids: usize,
    traceparent: Option<&'a HeaderValue>,
    tracestate: bool,
    forwarded_for: Option<&'a HeaderValue>,
    forwarded_proto: bool,
    forwarded_host: bool,
    host: Option<&'a HeaderValue>,
}

impl<'a> Seen<'a> {
    fn of(headers: &'a HeaderMap) -> Seen<'a> {
        let mut seen = Seen::default();
        for (name, value) in headers {
            match name.as_str() {
                "x-request-id" => {
                    seen.request_ids += 1;
                    seen.request_id.get_or_insert(value);
                }
                "traceparent" => {
                    seen.traceparent.get_or_insert(value);
                }
                "tracestate" => seen.tracestate = true,
                "x-forwarded-for" => {
                    seen.forwarded_for.get_or_insert(value);
                }
                "x-forwarded-proto" => seen.forwarded_proto = true,
                "x-forwarded-host" => seen.forwarded_host = true,
                "host" => {
                    seen.host.get_or_insert(value);
                }
                other => seen.hop_by_hop |= is_hop_by_hop(other),
            }
        }
        seen
    }
}

/// Rewrites a client's request headers for the instance; the request id
/// (to return to the client). `peer` is the client's address.
pub(crate) fn to_upstream(
    headers: &mut HeaderMap,
    peer: Option<&HeaderValue>,
    websocket: bool,
) -> HeaderValue {
    // One pass to learn what is there; then only the inserts that change
    // something, into a map grown once. Hop-by-hop headers (rare) go
    // first, as they may name any other.
    let mut seen = Seen::of(headers);
    if seen.hop_by_hop {
        remove_hop_by_hop(headers);
        seen = Seen::of(headers);
    }
    let given_id = seen.request_id.filter(|v| usable_request_id(v)).cloned();
    let keep_id = given_id.is_some() && seen.request_ids == 1;
    let request_id = given_id.unwrap_or_else(new_request_id);
    let valid_parent = seen
        .traceparent
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .is_some();
    let tracestate = seen.tracestate;
    let forwarded = peer.and_then(|ip| match seen.forwarded_for {
        Some(before) if !before.as_bytes().trim_ascii().is_empty() => {
            let mut both = Vec::with_capacity(before.len() + 2 + ip.len());
            both.extend_from_slice(before.as_bytes());
            both.extend_from_slice(b", ");
            both.extend_from_slice(ip.as_bytes());
            HeaderValue::from_bytes(&both).ok()
        }
        _ => Some(ip.clone()),
    });
    let proto = !seen.forwarded_proto;
    let host = if seen.forwarded_host {
        None
    } else {
        seen.host.cloned()
    };

    headers.reserve(5);
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    if !keep_id {
        headers.insert(REQUEST_ID, request_id.clone());
    }
    if !valid_parent {
        if tracestate {
            headers.remove(TRACESTATE);
        }
        headers.insert(TRACEPARENT, new_traceparent());
    }
    if let Some(value) = forwarded {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if proto {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    request_id
}

/// Rewrites an instance's response headers for the client.
pub(crate) fn to_client(headers: &mut HeaderMap, request_id: &HeaderValue, websocket: bool) {
    strip_hop_by_hop(headers);
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    headers
        .entry(REQUEST_ID)
        .or_insert_with(|| request_id.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("content-type", "application/json"),
            ("host", "api.example"),
        ]);
        to_upstream(&mut h, None, false);
        for gone in [
            "connection",
            "keep-alive",
            "x-secret-hop",
            "transfer-encoding",
            "te",
        ] {
            assert!(!h.contains_key(gone), "{gone} passed");
        }
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-forwarded-host"], "api.example");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn request_ids_and_trace_contexts_are_kept_or_made() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = map(&[
            ("x-request-id", "abc-1"),
            ("traceparent", parent),
            ("tracestate", "k=v"),
        ]);
        let id = to_upstream(&mut h, None, false);
        assert_eq!(id, "abc-1");
        assert_eq!(h["traceparent"], parent);
        assert_eq!(h["tracestate"], "k=v");

        let mut h = map(&[
            ("x-request-id", ""),
            ("traceparent", "garbage"),
            ("tracestate", "k=v"),
        ]);
        let id = to_upstream(&mut h, None, false);
        assert_eq!(id.len(), 32);
        assert_eq!(h["x-request-id"], id);
        let made = h["traceparent"].to_str().unwrap();
        assert!(TraceParent::parse(made).is_some(), "{made}");
        assert!(made.ends_with("-01"), "sampled: {made}");
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert!(!h.contains_key("tracestate"));
    }

    #[test]
    fn headers_connection_names_go_before_the_rest_is_read() {
        let mut h = map(&[
            ("connection", "x-request-id, x-forwarded-proto"),
            ("x-request-id", "named-hop"),
            ("x-forwarded-proto", "https"),
        ]);
        let id = to_upstream(&mut h, None, false);
        assert_ne!(id, "named-hop");
        assert_eq!(h["x-request-id"], id);
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn a_repeated_request_id_is_sent_once() {
        let mut h = map(&[("x-request-id", "first"), ("x-request-id", "second")]);
        let id = to_upstream(&mut h, None, false);
        assert_eq!(id, "first");
        let all: Vec<_> = h.get_all("x-request-id").iter().collect();
        assert_eq!(all, ["first"]);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let ip = peer_value([10, 0, 0, 7].into()).unwrap();
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ]);
        to_upstream(&mut h, Some(&ip), false);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        let mut h = HeaderMap::new();
        to_upstream(&mut h, Some(&ip), false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
    }

    #[test]
    fn websocket_upgrades_keep_their_upgrade_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(is_websocket_upgrade(&h));
        to_upstream(&mut h, None, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!is_websocket_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn responses_lose_hop_headers_and_carry_the_request_id() {
        let id = HeaderValue::from_static("r1");
        let mut h = map(&[("connection", "close"), ("content-length", "2")]);
        to_client(&mut h, &id, false);
        assert!(!h.contains_key("connection"));
        assert_eq!(h["x-request-id"], "r1");
        let mut h = map(&[("x-request-id", "theirs")]);
        to_client(&mut h, &id, false);
        assert_eq!(h["x-request-id"], "theirs");
    }
}
