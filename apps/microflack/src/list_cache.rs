//! The messages list, cached by each messages instance: every message of
//! the last [`WINDOW`](crate::messages::WINDOW), already serialized, so that
//! `GET /api/messages` (the page's first request, and every reconnecting
//! client's) costs neither a query nor a serialization. Any
//! `updated_since` and `user_id` is answered from it: the messages are in
//! list order (`updated_at`, then `id`), so `updated_since` is a suffix,
//! found by binary search, and `user_id` a filter.
//!
//! How fresh an answer is:
//!
//! - a write of this instance (post, edit, previews stored) clears the
//!   cache once committed and before it is acknowledged, so the next `GET`
//!   reloads; a load that was under way during the write is not kept (each
//!   clear starts a new generation, and a load is kept only if no clear
//!   happened since it began);
//! - a write of another instance sharing the database clears the cache
//!   when its `updated_model` event arrives (broadcast to every messages
//!   instance). That instance dispatches the event before it acknowledges
//!   the write, but delivery is asynchronous: a `GET` here may miss the
//!   write for as long as the event takes to arrive (well under a
//!   millisecond on the embedded transport, a few on RabbitMQ);
//! - whatever happens to events (a broker cut off), nothing older than
//!   the cache's maximum age is served: [`DEFAULT_MAX_AGE`], or
//!   `MESSAGES_LIST_CACHE_MS` milliseconds (`0` turns the cache off).
//!
//! A version check against the database on every `GET` (`SELECT
//! max(updated_at), count(*)`, …) would close the second gap but costs a
//! query per request, most of what the cache saves, and it would still
//! miss an edit within the same second; the event and the age bound are
//! the trade made here.
//!
//! A window whose list is larger than [`MAX_BYTES`] is not kept: such
//! requests query the database as if there were no cache.

use axum::body::Bytes;
use futures::future::BoxFuture;
use shimeji::dependency::{Dependency, DependencyError, SetupContext};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::messages::Message;

/// The config key of the cache's maximum age, in milliseconds; `0` turns
/// it off.
pub const MAX_AGE_KEY: &str = "MESSAGES_LIST_CACHE_MS";
/// How long a cached list is served at most when events are lost.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(1);
/// The largest list kept, in bytes of JSON.
pub const MAX_BYTES: usize = 8 << 20;

const PREFIX: &[u8] = b"{\"messages\":[";
const SUFFIX: &[u8] = b"]}";

/// The cached list of a messages instance: a dependency, set up from
/// `MESSAGES_LIST_CACHE_MS`.
#[derive(Clone, Default)]
pub struct ListCache {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    max_age: OnceLock<Duration>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    generation: u64,
    cached: Option<Cached>,
}

enum Cached {
    /// The list, while younger than the maximum age.
    List(Arc<Snapshot>),
    /// The list was over [`MAX_BYTES`] when loaded at this instant.
    TooLarge(Instant),
}

/// What [`ListCache::lookup`] found.
pub enum Lookup {
    /// The response body.
    Hit(Bytes),
    /// Load the whole window and [`store`](ListCache::store) it with this
    /// ticket.
    Load(Ticket),
    /// Query the database for this request only.
    Direct,
}

/// A load's claim to be stored: the generation it began in.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// Every message from `since` on, serialized: the full response body, and
/// where each message is in it.
#[derive(Debug)]
pub struct Snapshot {
    since: i64,
    loaded: Instant,
    body: Bytes,
    items: Vec<Item>,
}

#[derive(Debug)]
struct Item {
    updated_at: i64,
    user_id: i64,
    json: Range<usize>,
}

impl ListCache {
    /// A cache whose lists are served for at most `max_age` (zero: off).
    pub fn with_max_age(max_age: Duration) -> Self {
        let cache = ListCache::default();
        let _ = cache.inner.max_age.set(max_age);
        cache
    }

    fn max_age(&self) -> Duration {
        self.inner.max_age.get().copied().unwrap_or(DEFAULT_MAX_AGE)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The body answering messages updated at `since` or later (and of
    /// `user_id`, if given), or what to do to get it.
    pub fn lookup(&self, since: i64, user_id: Option<i64>) -> Lookup {
        let max_age = self.max_age();
        if max_age.is_zero() {
            return Lookup::Direct;
        }
        let snapshot = {
            let state = self.state();
            match &state.cached {
                Some(Cached::List(s)) if s.loaded.elapsed() < max_age && s.since <= since => {
                    s.clone()
                }
                Some(Cached::TooLarge(at)) if at.elapsed() < max_age => return Lookup::Direct,
                _ => return Lookup::Load(Ticket(state.generation)),
            }
        };
        Lookup::Hit(snapshot.answer(since, user_id))
    }

    /// Keeps the list loaded for `ticket` (every message from `since` on,
    /// in list order) unless the cache was cleared since the ticket was
    /// taken; returns it either way.
    pub fn store(
        &self,
        ticket: Ticket,
        since: i64,
        messages: &[Message],
    ) -> Result<Arc<Snapshot>, serde_json::Error> {
        let snapshot = Arc::new(Snapshot::new(since, messages)?);
        let mut state = self.state();
        if state.generation == ticket.0 {
            state.cached = Some(if snapshot.body.len() > MAX_BYTES {
                Cached::TooLarge(snapshot.loaded)
            } else {
                Cached::List(snapshot.clone())
            });
        }
        Ok(snapshot)
    }

    /// Forgets the list: a message was written. Loads under way are not
    /// kept.
    pub fn clear(&self) {
        let mut state = self.state();
        state.generation = state.generation.wrapping_add(1);
        state.cached = None;
    }
}

impl Dependency for ListCache {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        Box::pin(async move {
            let configured = ctx
                .config()
                .get::<serde_json::Value>(MAX_AGE_KEY)
                .map_err(|e| DependencyError::new(MAX_AGE_KEY, e.to_string()))?;
            let max_age = match configured {
                None => DEFAULT_MAX_AGE,
                Some(value) => parse_millis(&value).ok_or_else(|| {
                    DependencyError::new(MAX_AGE_KEY, "must be a number of milliseconds")
                })?,
            };
            let _ = self.inner.max_age.set(max_age);
            Ok(())
        })
    }
}

/// Milliseconds from a config value: a number, or a string of one.
fn parse_millis(value: &serde_json::Value) -> Option<Duration> {
    let millis = match value {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) if s.trim().is_empty() => {
            return Some(DEFAULT_MAX_AGE);
        }
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

impl Snapshot {
    /// `messages` (every one from `since` on, in list order), serialized.
    pub fn new(since: i64, messages: &[Message]) -> Result<Snapshot, serde_json::Error> {
        let mut body = Vec::with_capacity(PREFIX.len() + SUFFIX.len() + messages.len() * 256);
        body.extend_from_slice(PREFIX);
        let mut items = Vec::with_capacity(messages.len());
        for (n, message) in messages.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            let start = body.len();
            serde_json::to_writer(&mut body, message)?;
            items.push(Item {
                updated_at: message.updated_at,
                user_id: message.user_id,
                json: start..body.len(),
            });
        }
        body.extend_from_slice(SUFFIX);
        Ok(Snapshot {
            since,
            loaded: Instant::now(),
            body: Bytes::from(body),
            items,
        })
    }

    /// The body of the messages updated at `since` or later (at least the
    /// snapshot's own `since`), and of `user_id` if given.
    pub fn answer(&self, since: i64, user_id: Option<i64>) -> Bytes {
        let first = self.items.partition_point(|i| i.updated_at < since);
        if first == 0 && user_id.is_none() {
            return self.body.clone();
        }
        let chosen = self.items[first..]
            .iter()
            .filter(|i| user_id.is_none_or(|u| i.user_id == u));
        let mut body = Vec::with_capacity(self.body.len());
        body.extend_from_slice(PREFIX);
        for (n, item) in chosen.enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&self.body[item.json.clone()]);
        }
        body.extend_from_slice(SUFFIX);
        Bytes::from(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: i64, updated_at: i64, user_id: i64) -> Message {
        Message::new(
            id,
            updated_at,
            updated_at,
            format!("m{id}"),
            format!("m{id}"),
            user_id,
            0,
        )
    }

    fn ids(body: &Bytes) -> Vec<i64> {
        let value: serde_json::Value = serde_json::from_slice(body).unwrap();
        value["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect()
    }

    fn hit(cache: &ListCache, since: i64, user_id: Option<i64>) -> Option<Vec<i64>> {
        match cache.lookup(since, user_id) {
            Lookup::Hit(body) => Some(ids(&body)),
            _ => None,
        }
    }

    #[test]
    fn answers_every_shape() {
        let list = [
            message(1, 10, 1),
            message(2, 10, 2),
            message(3, 12, 1),
            message(4, 15, 2),
        ];
        let snapshot = Snapshot::new(5, &list).unwrap();
        assert_eq!(ids(&snapshot.answer(5, None)), [1, 2, 3, 4]);
        assert_eq!(ids(&snapshot.answer(11, None)), [3, 4]);
        assert_eq!(ids(&snapshot.answer(16, None)), Vec::<i64>::new());
        assert_eq!(ids(&snapshot.answer(5, Some(2))), [2, 4]);
        assert_eq!(ids(&snapshot.answer(12, Some(1))), [3]);
        let empty = Snapshot::new(5, &[]).unwrap();
        assert_eq!(&empty.answer(5, None)[..], b"{\"messages\":[]}");
        let one: serde_json::Value = serde_json::from_slice(&snapshot.answer(15, None)).unwrap();
        assert_eq!(one["messages"][0], serde_json::to_value(&list[3]).unwrap());
    }

    #[test]
    fn a_clear_drops_the_list_and_loads_under_way() {
        let cache = ListCache::with_max_age(Duration::from_secs(60));
        let Lookup::Load(ticket) = cache.lookup(5, None) else {
            panic!("an empty cache loads");
        };
        cache.store(ticket, 5, &[message(1, 10, 1)]).unwrap();
        assert_eq!(hit(&cache, 5, None), Some(vec![1]));
        assert_eq!(hit(&cache, 4, None), None, "older than the list: a load");

        let Lookup::Load(ticket) = ({
            cache.clear();
            cache.lookup(5, None)
        }) else {
            panic!("a cleared cache loads");
        };
        cache.clear();
        cache.store(ticket, 5, &[message(1, 10, 1)]).unwrap();
        assert_eq!(
            hit(&cache, 5, None),
            None,
            "a load that raced a clear is not kept"
        );
    }

    #[test]
    fn age_and_size_bounds() {
        let off = ListCache::with_max_age(Duration::ZERO);
        assert!(matches!(off.lookup(5, None), Lookup::Direct));

        let short = ListCache::with_max_age(Duration::from_millis(20));
        let Lookup::Load(ticket) = short.lookup(5, None) else {
            panic!("an empty cache loads");
        };
        short.store(ticket, 5, &[message(1, 10, 1)]).unwrap();
        assert!(hit(&short, 5, None).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(matches!(short.lookup(5, None), Lookup::Load(_)));

        let cache = ListCache::with_max_age(Duration::from_secs(60));
        let big = "x".repeat(MAX_BYTES / 2);
        let list = [
            Message::new(1, 10, 10, big.clone(), big.clone(), 1, 0),
            Message::new(2, 10, 10, big.clone(), big, 1, 0),
        ];
        let Lookup::Load(ticket) = cache.lookup(5, None) else {
            panic!("an empty cache loads");
        };
        cache.store(ticket, 5, &list).unwrap();
        assert!(matches!(cache.lookup(5, None), Lookup::Direct));
    }

    #[test]
    fn config_values() {
        use serde_json::json;
        assert_eq!(parse_millis(&json!(250)), Some(Duration::from_millis(250)));
        assert_eq!(parse_millis(&json!("0")), Some(Duration::ZERO));
        assert_eq!(parse_millis(&json!("")), Some(DEFAULT_MAX_AGE));
        assert_eq!(parse_millis(&json!("soon")), None);
        assert_eq!(parse_millis(&json!(-1)), None);
    }
}
