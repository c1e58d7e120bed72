//! Sticky routing, for services whose record says `sticky` (sessions kept
//! in one process, such as Socket.IO's long-polling transport).
//!
//! A client is kept on an instance by, in this order:
//! 1. the Socket.IO session id (`sid` in the query): the gateway learns
//!    which instance made a session from its handshake answer (a request
//!    with `EIO` and no `sid`), so clients that keep no cookies stick too;
//! 2. the sticky cookie (`shimeji_sticky`, set on every answer of a sticky
//!    service that came from another instance than the cookie named). It
//!    holds a hash of the instance id, the same in every gateway, so a
//!    client can move between gateways.
//!
//! When the instance is gone (deregistered, ejected) the client goes to
//! another one, which may not know its session: there is nothing better to
//! do once the process holding the session is gone.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::eject::now_ms;
use crate::upstream::Upstream;

/// How long a Socket.IO session is remembered after its last request.
const SESSION_IDLE: Duration = Duration::from_secs(3600);

/// Handshake answers longer than this are not read for their session id.
pub(crate) const HANDSHAKE_MAX: u64 = 8 * 1024;

/// The sticky cookie's name and the sessions learnt.
#[derive(Debug)]
pub(crate) struct Sticky {
    cookie: String,
    capacity: usize,
    /// Session id → (instance token, last use in [`now_ms`]).
    sessions: Mutex<HashMap<String, (String, u64)>>,
}

/// Where a request of a sticky service wants to go.
#[derive(Debug, Default)]
pub(crate) struct Wish {
    /// The instance token it asks for, if any.
    pub(crate) token: Option<String>,
    /// Whether it is a Socket.IO handshake (its answer names a session).
    pub(crate) handshake: bool,
}

impl Sticky {
    /// Sticky routing with cookie `cookie`, remembering up to `capacity`
    /// sessions.
    pub(crate) fn new(cookie: &str, capacity: usize) -> Sticky {
        Sticky {
            cookie: cookie.to_string(),
            capacity,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// What a request with `headers` and `query` asks for.
    pub(crate) fn wish(&self, headers: &HeaderMap, query: Option<&str>) -> Wish {
        let param = |name: &str| {
            query?
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let is_socketio = param("EIO").is_some();
        let sid = param("sid").filter(|s| !s.is_empty());
        let from_session = sid.as_ref().and_then(|sid| {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let entry = sessions.get_mut(sid)?;
            entry.1 = now_ms();
            Some(entry.0.clone())
        });
        Wish {
            token: from_session.or_else(|| self.cookie_in(headers)),
            handshake: is_socketio && sid.is_none(),
        }
    }

    /// The sticky cookie's value in `headers`.
    fn cookie_in(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie)
            .map(|(_, value)| value.trim_matches('"').to_string())
    }

    /// Adds the cookie naming `upstream` to an answer, unless the request
    /// already named it.
    pub(crate) fn set_cookie(&self, headers: &mut HeaderMap, wish: &Wish, upstream: &Upstream) {
        if wish.token.as_deref() == Some(upstream.token.as_str()) {
            return;
        }
        let cookie = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Lax",
            self.cookie, upstream.token
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }

    /// Remembers the session a handshake answer's body names as made by
    /// `upstream`.
    pub(crate) fn learn(&self, body: &Bytes, upstream: &Upstream) {
        let Some(sid) = handshake_sid(body) else {
            return;
        };
        let now = now_ms();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= self.capacity {
            let idle = u64::try_from(SESSION_IDLE.as_millis()).unwrap_or(u64::MAX);
            sessions.retain(|_, (_, last)| now.saturating_sub(*last) < idle);
            if sessions.len() >= self.capacity {
                tracing::warn!(
                    capacity = self.capacity,
                    "too many sticky sessions: forgetting them all"
                );
                sessions.clear();
            }
        }
        sessions.insert(sid, (upstream.token.clone(), now));
    }

    /// The sessions remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }
}

/// The instance of `pool` that `token` names, if it is there and not
/// ejected at `now`.
pub(crate) fn find(pool: &[Arc<Upstream>], token: &str, now: u64) -> Option<Arc<Upstream>> {
    pool.iter()
        .find(|u| u.token == token && !u.ejection.is_ejected(now))
        .cloned()
}

/// The session id of an Engine.IO handshake answer: the `sid` of the JSON
/// object of its first (open) packet, in protocol 3 (`96:0{…}`) or 4
/// (`0{…}`).
fn handshake_sid(body: &[u8]) -> Option<String> {
    let start = body.iter().position(|&b| b == b'{')?;
    let value = serde_json::Deserializer::from_slice(&body[start..])
        .into_iter::<serde_json::Value>()
        .next()?
        .ok()?;
    value.get("sid")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(id: &str) -> Arc<Upstream> {
        Arc::new(Upstream::new(id, "127.0.0.1:1").unwrap())
    }

    #[test]
    fn handshakes_of_both_protocols_name_their_session() {
        let v4 =
            br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000}"#;
        assert_eq!(handshake_sid(v4).as_deref(), Some("lv_VI97HAXpY6yYWAAAC"));
        let v3 = br#"96:0{"sid":"abc","upgrades":[],"pingTimeout":5000}2:40"#;
        assert_eq!(handshake_sid(v3).as_deref(), Some("abc"));
        assert_eq!(handshake_sid(b"not a handshake"), None);
    }

    #[test]
    fn sessions_and_cookies_name_instances() {
        let sticky = Sticky::new("shimeji_sticky", 10);
        let a = upstream("a");
        let b = upstream("b");
        let wish = sticky.wish(&HeaderMap::new(), Some("EIO=4&transport=polling"));
        assert!(wish.handshake);
        assert!(wish.token.is_none());
        sticky.learn(&Bytes::from_static(br#"0{"sid":"s1"}"#), &a);

        let wish = sticky.wish(&HeaderMap::new(), Some("EIO=4&transport=polling&sid=s1"));
        assert!(!wish.handshake);
        assert_eq!(wish.token.as_deref(), Some(a.token.as_str()));

        let mut headers = HeaderMap::new();
        let cookie = format!("other=1; shimeji_sticky={}", b.token);
        headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        let wish = sticky.wish(&headers, None);
        assert_eq!(wish.token.as_deref(), Some(b.token.as_str()));
        let pool = vec![a.clone(), b.clone()];
        assert_eq!(find(&pool, &b.token, 0).unwrap().instance_id, "b");
        assert!(find(&pool, "gone", 0).is_none());

        let mut answer = HeaderMap::new();
        sticky.set_cookie(&mut answer, &wish, &b);
        assert!(answer.get(header::SET_COOKIE).is_none(), "already there");
        sticky.set_cookie(&mut answer, &wish, &a);
        let set = answer[header::SET_COOKIE].to_str().unwrap();
        assert!(
            set.starts_with(&format!("shimeji_sticky={}", a.token)),
            "{set}"
        );
    }

    #[test]
    fn the_session_table_is_bounded() {
        let sticky = Sticky::new("c", 2);
        let a = upstream("a");
        for i in 0..5 {
            sticky.learn(&Bytes::from(format!(r#"0{{"sid":"s{i}"}}"#)), &a);
        }
        assert!(sticky.len() <= 2);
    }
}
