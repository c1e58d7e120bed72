//! Acknowledging the deliveries of one consumer channel, several at a time.
//!
//! Every queue a service instance consumes shares one channel, whose
//! delivery tags run 1, 2, 3, … Work finishes out of order; a delivery is
//! *settled* once it is to be acked (its reply confirmed, its event
//! handled) or has been requeued or rejected on its own. Acks go out as one
//! `basic.ack multiple` up to the highest ackable tag below the first
//! unsettled one: every delivery it covers is settled, so nothing is acked
//! before its work is done. While one ack is on its way, the next ones
//! gather; under load one frame acks many deliveries, and the broker's
//! queue process has fewer messages to handle.
//!
//! A settled delivery behind an unsettled one would wait for it, and every
//! delivery unacked counts against the prefetch (`max_workers`): one slow
//! call could hold back all the fast ones finished after it and stall the
//! instance. So when the first unsettled delivery has held the line for
//! [`HOLD`], the settled ones behind it are acked one by one, at once and
//! from then on while it holds: a finished delivery uses a prefetch slot
//! for at most `HOLD`.

use crate::sync::lock;
use amqprs::channel::{BasicAckArguments, BasicNackArguments, BasicRejectArguments, Channel};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long settled deliveries wait behind an unsettled one before they are
/// acked one by one. Under load the first unsettled delivery moves on well
/// within it, and acks stay batched.
pub(super) const HOLD: Duration = Duration::from_millis(20);

struct State {
    /// The smallest delivery tag not settled yet.
    next: u64,
    /// Since when `next` has been the smallest tag not settled.
    next_since: Instant,
    /// Settled tags above `next`.
    early: BTreeSet<u64>,
    /// Settled tags still to be acked.
    to_ack: BTreeSet<u64>,
}

/// The acks one flush sends.
#[derive(Debug, PartialEq)]
struct Due {
    /// One `basic.ack multiple` up to this tag.
    multiple: Option<u64>,
    /// Tags acked one by one: settled behind a delivery that holds the line.
    singles: Vec<u64>,
    /// When to look again for tags held behind the first unsettled one.
    recheck: Option<Instant>,
}

impl State {
    fn new(now: Instant) -> Self {
        State {
            next: 1,
            next_since: now,
            early: BTreeSet::new(),
            to_ack: BTreeSet::new(),
        }
    }

    fn settle(&mut self, tag: u64, ack: bool, now: Instant) {
        if tag < self.next {
            return; // settled already
        }
        self.early.insert(tag);
        if ack {
            self.to_ack.insert(tag);
        }
        let before = self.next;
        loop {
            let next = self.next;
            if !self.early.remove(&next) {
                break;
            }
            self.next += 1;
        }
        if self.next != before {
            self.next_since = now;
        }
    }

    /// The tag one `basic.ack multiple` may go up to: the highest tag to
    /// ack below the first unsettled one.
    fn watermark(&self) -> Option<u64> {
        self.to_ack.range(..self.next).next_back().copied()
    }

    /// What to ack now: the batch below the first unsettled tag, and the
    /// tags behind it once it has held them for `HOLD`. The tags acked one
    /// by one leave `to_ack` here, so that no tag is ever acked twice.
    fn due(&mut self, now: Instant) -> Due {
        let multiple = self.watermark();
        let held = self.to_ack.range(self.next + 1..).next().is_some();
        if !held {
            return Due {
                multiple,
                singles: Vec::new(),
                recheck: None,
            };
        }
        let until = self.next_since + HOLD;
        if now < until {
            return Due {
                multiple,
                singles: Vec::new(),
                recheck: Some(until),
            };
        }
        let singles: Vec<u64> = self
            .to_ack
            .split_off(&(self.next + 1))
            .into_iter()
            .collect();
        Due {
            multiple,
            singles,
            recheck: None,
        }
    }
}

/// The acks of one channel.
pub(super) struct Acker {
    channel: Channel,
    state: Mutex<State>,
    /// The highest tag acked on the wire; held while an ack is sent, so
    /// that no tag is acked twice (the broker closes the channel for that).
    sent: tokio::sync::Mutex<u64>,
    wake: Arc<Notify>,
}

impl Acker {
    /// An acker for `channel`, with its sending task.
    pub(super) fn new(channel: Channel) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let acker = Arc::new(Acker {
            channel,
            state: Mutex::new(State::new(Instant::now())),
            sent: tokio::sync::Mutex::new(0),
            wake: wake.clone(),
        });
        tokio::spawn(send_loop(Arc::downgrade(&acker), wake));
        acker
    }

    /// The work of `tag` is done: ack it.
    pub(super) fn ack(&self, tag: u64) {
        self.settle(tag, true);
    }

    /// Hands `tag` back to its queue for another consumer.
    pub(super) async fn requeue(&self, tag: u64) {
        let _ = self
            .channel
            .basic_nack(BasicNackArguments::new(tag, false, true))
            .await;
        self.settle(tag, false);
    }

    /// Drops `tag` without requeueing it.
    pub(super) async fn reject(&self, tag: u64) {
        let _ = self
            .channel
            .basic_reject(BasicRejectArguments::new(tag, false))
            .await;
        self.settle(tag, false);
    }

    fn settle(&self, tag: u64, ack: bool) {
        lock(&self.state).settle(tag, ack, Instant::now());
        self.wake.notify_one();
    }

    /// Sends the acks settled so far; returns when to look again for
    /// deliveries held behind an unsettled one.
    pub(super) async fn flush(&self) -> Option<Instant> {
        let mut sent = self.sent.lock().await;
        let due = lock(&self.state).due(Instant::now());
        for tag in due.singles {
            let _ = self
                .channel
                .basic_ack(BasicAckArguments::new(tag, false))
                .await;
        }
        let Some(upto) = due.multiple.filter(|t| *t > *sent) else {
            return due.recheck;
        };
        if self
            .channel
            .basic_ack(BasicAckArguments::new(upto, true))
            .await
            .is_ok()
        {
            *sent = upto;
            lock(&self.state).to_ack.retain(|t| *t > upto);
        }
        due.recheck
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        // Lets the sending task see that the acker is gone.
        self.wake.notify_one();
    }
}

async fn send_loop(acker: Weak<Acker>, wake: Arc<Notify>) {
    let mut recheck = None;
    loop {
        match recheck {
            Some(at) => tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(at) => {}
            },
            None => wake.notified().await,
        }
        let Some(acker) = acker.upgrade() else {
            return;
        };
        recheck = acker.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tags_below_the_first_unsettled_one_are_acked() {
        let now = Instant::now();
        let mut state = State::new(now);
        let mut settle = |tag: u64, ack: bool| {
            state.settle(tag, ack, now);
            state.watermark()
        };
        assert_eq!(settle(2, true), None, "1 is still running");
        assert_eq!(settle(3, false), None);
        assert_eq!(
            settle(1, true),
            Some(2),
            "1..=3 settled; 3 was rejected on its own"
        );
        assert_eq!(settle(5, true), Some(2));
        assert_eq!(settle(4, true), Some(5));
        assert_eq!(settle(4, true), Some(5), "settling twice changes nothing");
    }

    #[test]
    fn deliveries_held_behind_a_slow_one_are_acked_one_by_one_after_the_hold() {
        let t0 = Instant::now();
        let mut state = State::new(t0);
        // 1 is slow; 2 and 3 finish at once.
        state.settle(2, true, t0);
        state.settle(3, true, t0);
        let early = state.due(t0 + HOLD / 2);
        assert_eq!(
            early,
            Due {
                multiple: None,
                singles: vec![],
                recheck: Some(t0 + HOLD)
            },
            "within the hold they wait, batched"
        );
        assert_eq!(
            state.due(t0 + HOLD).singles,
            vec![2, 3],
            "after the hold they are acked one by one"
        );
        assert_eq!(state.due(t0 + HOLD).singles, Vec::<u64>::new(), "once");
        // While 1 still holds the line, later ones go at once.
        state.settle(4, true, t0 + HOLD * 2);
        assert_eq!(state.due(t0 + HOLD * 2).singles, vec![4]);
        // 1 finishes: one multiple ack up to 1 (2..=4 are acked already).
        state.settle(1, true, t0 + HOLD * 3);
        let due = state.due(t0 + HOLD * 3);
        assert_eq!(due.multiple, Some(1));
        assert!(due.singles.is_empty());
        assert_eq!(due.recheck, None);
    }

    #[test]
    fn the_hold_starts_when_a_delivery_becomes_the_first_unsettled_one() {
        let t0 = Instant::now();
        let mut state = State::new(t0);
        state.settle(1, true, t0 + HOLD * 10);
        state.settle(3, true, t0 + HOLD * 10);
        // 2 became first unsettled at t0 + 10·HOLD, not at t0.
        assert_eq!(state.due(t0 + HOLD * 10).singles, Vec::<u64>::new());
        assert_eq!(state.due(t0 + HOLD * 11).singles, vec![3]);
    }
}
