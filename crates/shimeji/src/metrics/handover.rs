//! The hand-over: how an in-process call is measured once instead of twice.
//!
//! A call from a client to an entrypoint of this process (the in-process
//! transport) mostly runs whole within the client's first poll of the call,
//! on the client's thread: the poll reaches the service's handler, which
//! runs the entrypoint to its end before the poll returns. Measured on each
//! side by itself, such a call would cost four clock readings and two
//! histogram observations for what is one interval. Instead the client
//! hands its start reading over to the entrypoint through the thread-locals
//! below, and an entrypoint that finishes within that poll makes one
//! observation for both series, the entrypoint's and the client's. That is
//! two clock readings and one observation, and both series hold the same
//! interval: the client's start to the entrypoint's end. Anything else
//! (another thread, a later poll, a remote transport) is measured on each
//! side by itself.
//!
//! The thread-locals, each of the running thread:
//!
//! | thread-local | holds | written by | read by |
//! |---|---|---|---|
//! | `START` | the start reading offered | the client: set by [`hand_over`], cleared when its [`FirstPoll`] drops | the entrypoint: taken by [`take_start`] |
//! | `POLLING` | the token of the call in its first poll (0: none) | the client: [`hand_over`], and put back when its [`FirstPoll`] drops | the entrypoint: [`take_start`], [`recorded_for`] |
//! | `RECORDED` | whether an entrypoint observed that call for its client | the client clears it ([`hand_over`]) and puts it back (drop); the entrypoint sets it ([`recorded_for`]) | the client: [`FirstPoll::end`] |
//! | `LAST` | the last token this thread gave | the client: [`hand_over`] | the client: [`hand_over`] |
//!
//! Step by step, for one call:
//!
//! 1. The client (`Client::send`) reads the clock: `started`. Right before
//!    its first poll of the call it calls [`hand_over`]`(started)`, which
//!    gives the call a [`Token`] unique in the process (from `LAST`: the
//!    thread's number in the high bits, a count in the low ones), sets
//!    `START` to `started`, `POLLING` to the token and `RECORDED` to false.
//!    The values it replaces (an outer call's, when a client is called
//!    inside an entrypoint that itself runs inline) are kept in the
//!    [`FirstPoll`] it returns.
//! 2. The client polls the call once. An entrypoint run within that poll
//!    begins with `EntrypointMetrics::start`, which calls [`take_start`]: it
//!    takes `START` (leaving it empty, so only the first run begun in that
//!    poll gets it) and reads `POLLING`. The run then starts at the client's
//!    reading and keeps the token. With nothing offered (no measuring
//!    client, another thread) the run reads the clock itself and has no
//!    token.
//! 3. When the run ends (`Run::finish`, or its drop), it calls
//!    [`recorded_for`]`(token)`. If `POLLING` still holds its token, the
//!    client's first poll is still running on this thread: it sets
//!    `RECORDED`, and the run is observed in its entrypoint's `inline`
//!    histogram. Otherwise (the run waited and ended in a later poll) it is
//!    observed in its `duration` histogram like any run, still measured
//!    from the client's start. Its outcome counts in the entrypoint's errors
//!    either way.
//! 4. After the poll the client calls [`FirstPoll::end`], which reads
//!    `RECORDED`: true when the entrypoint made the observation for it.
//!    Dropping the [`FirstPoll`] then clears `START` (no later run on this
//!    thread takes a stale start) and puts the outer call's `POLLING` and
//!    `RECORDED` back.
//! 5. With the call's result in, the client records it
//!    (`CallMetrics::record`): its outcome always, its own time only when
//!    the entrypoint did not observe the call for it.
//! 6. On a scrape, the collector adds an entrypoint's `inline` histogram to
//!    that entrypoint's series and to the client series of the same
//!    `service.method`: the one observation counts in both.
//!
//! Tokens are never reused, so a run that ends during another call's first
//! poll on the same thread is not taken for that call's. Token 0 means none:
//! on a thread whose thread-locals are gone (being torn down), nothing is
//! handed over.

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
