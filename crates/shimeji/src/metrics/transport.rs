//! Transport counters: reconnections and messages given up on. Both are
//! rare, so they are counted whether recording is on or not.

use super::{global, lock};

/// Counts one reconnection of `transport`. Counted whether recording is on
/// or not: it is rare, and a scrape after turning recording on should see it.
pub(crate) fn reconnected(transport: &'static str) {
    let mut all = lock(&global().reconnects);
    match all.iter_mut().find(|(t, _)| *t == transport) {
        Some((_, n)) => *n += 1,
        None => all.push((transport, 1)),
    }
}

/// Counts one message `transport` gave up on, for `reason` (a fixed set:
/// see the table in [`metrics`](super)). Counted whether recording is on
/// or not: it is rare.
pub(crate) fn dropped(transport: &'static str, reason: &'static str) {
    let mut all = lock(&global().dropped);
    match all.iter_mut().find(|(k, _)| *k == (transport, reason)) {
        Some((_, n)) => *n += 1,
        None => all.push(((transport, reason), 1)),
    }
}
