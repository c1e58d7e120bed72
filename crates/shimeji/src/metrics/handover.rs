//! How an in-process call is measured once instead of twice. A client
//! hands its start reading over before the first poll of its call; an
//! entrypoint that runs within that poll, on the same thread, starts its run
//! at that reading, and if it also finishes within that poll it records the
//! run in its `inline` histogram, which the scrape adds to the client series
//! of the same `service.method` too, and tells the client so. Both series
//! then hold the same interval (the client's start to the entrypoint's end)
//! for the price of two clock readings and one observation. Anything else
//! (another thread, a later poll, a remote transport) is measured on each
//! side by itself.

use super::clock::Instant;
use super::histogram::thread_number;
use std::cell::Cell;

/// One client call's first poll, unique in the process.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token(u64);

thread_local! {
    /// The start reading the polling client offers.
    static START: Cell<Option<Instant>> = const { Cell::new(None) };
    /// The client call whose first poll runs on this thread now (0: none).
    static POLLING: Cell<u64> = const { Cell::new(0) };
    /// Whether an entrypoint recorded that call for its client.
    static RECORDED: Cell<bool> = const { Cell::new(false) };
    /// The last token this thread gave.
    static LAST: Cell<u64> = const { Cell::new(0) };
}

/// A client's first poll, from [`hand_over`] until dropped; calls
/// nest (a client called inside an entrypoint that runs inline).
pub(crate) struct FirstPoll {
    outer: u64,
    outer_recorded: bool,
}

/// A client hands its start over before the first poll of its call.
pub(crate) fn hand_over(started: Instant) -> FirstPoll {
    let token = LAST
        .try_with(|last| {
            // The thread's number in the high bits: unique across threads.
            let next = match last.get() {
                0 => ((thread_number() as u64) << 40) + 1,
                n => n.wrapping_add(1),
            };
            last.set(next);
            next
        })
        .unwrap_or(0);
    let _ = START.try_with(|s| s.set(Some(started)));
    FirstPoll {
        outer: POLLING.try_with(|p| p.replace(token)).unwrap_or(0),
        outer_recorded: RECORDED.try_with(|r| r.replace(false)).unwrap_or(false),
    }
}

/// The entrypoint takes the start, if a polling caller offers one.
pub(crate) fn take_start() -> Option<(Instant, Token)> {
    let started = START.try_with(Cell::take).ok().flatten()?;
    let token = POLLING.try_with(Cell::get).ok().filter(|t| *t != 0)?;
    Some((started, Token(token)))
}

/// At the end of a run started with `caller`'s reading: true (and the
/// caller is told) if `caller` is still in its first poll on this thread.
pub(crate) fn recorded_for(caller: Token) -> bool {
    let polling = POLLING.try_with(Cell::get).is_ok_and(|t| t == caller.0);
    if polling {
        let _ = RECORDED.try_with(|r| r.set(true));
    }
    polling
}

impl FirstPoll {
    /// After the first poll: whether an entrypoint recorded the call.
    pub(crate) fn end(self) -> bool {
        RECORDED.try_with(Cell::get).unwrap_or(false)
        // `drop` puts the outer call's state back.
    }
}

impl Drop for FirstPoll {
    fn drop(&mut self) {
        let _ = START.try_with(|s| s.set(None));
        let _ = POLLING.try_with(|p| p.set(self.outer));
        let _ = RECORDED.try_with(|r| r.set(self.outer_recorded));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entrypoint_records_for_its_caller_only_within_the_callers_first_poll() {
        let start = Instant::now();
        // A client polls its call; the entrypoint runs inline.
        let outer = hand_over(start);
        let (_, outer_token) = take_start().expect("start offered");
        assert!(take_start().is_none(), "taken once");
        // That entrypoint calls another service, served inline too.
        let inner = hand_over(start);
        let (_, inner_token) = take_start().expect("start offered");
        assert!(recorded_for(inner_token));
        assert!(inner.end(), "the inner client is told");
        // A third call whose entrypoint waits: its first poll ends first.
        let waiting = hand_over(start);
        let (_, waiting_token) = take_start().expect("start offered");
        assert!(!waiting.end(), "nothing recorded during the poll");
        assert!(
            !recorded_for(waiting_token),
            "finishing later, it records for itself"
        );
        // Back in the outer entrypoint, still in its caller's first poll.
        assert!(recorded_for(outer_token));
        assert!(outer.end());
        assert!(!recorded_for(outer_token), "that poll is over");
        assert!(take_start().is_none(), "nothing offered now");
    }
}
