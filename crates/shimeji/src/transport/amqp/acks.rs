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

use amqprs::channel::{BasicAckArguments, BasicNackArguments, BasicRejectArguments, Channel};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    /// The smallest delivery tag not settled yet.
    next: u64,
    /// Settled tags above `next`.
    early: BTreeSet<u64>,
    /// Settled tags still to be acked.
    to_ack: BTreeSet<u64>,
}

impl State {
    fn new() -> Self {
        State {
            next: 1,
            ..State::default()
        }
    }

    fn settle(&mut self, tag: u64, ack: bool) {
        if tag < self.next {
            return; // settled already
        }
        self.early.insert(tag);
        if ack {
            self.to_ack.insert(tag);
        }
        loop {
            let next = self.next;
            if !self.early.remove(&next) {
                break;
            }
            self.next += 1;
        }
    }

    /// The tag one `basic.ack multiple` may go up to: the highest tag to
    /// ack below the first unsettled one.
    fn watermark(&self) -> Option<u64> {
        self.to_ack.range(..self.next).next_back().copied()
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

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Acker {
    /// An acker for `channel`, with its sending task.
    pub(super) fn new(channel: Channel) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let acker = Arc::new(Acker {
            channel,
            state: Mutex::new(State::new()),
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
        lock(&self.state).settle(tag, ack);
        self.wake.notify_one();
    }

    /// Sends the acks settled so far.
    pub(super) async fn flush(&self) {
        let mut sent = self.sent.lock().await;
        let upto = lock(&self.state).watermark();
        let Some(upto) = upto.filter(|t| *t > *sent) else {
            return;
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
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        // Lets the sending task see that the acker is gone.
        self.wake.notify_one();
    }
}

async fn send_loop(acker: Weak<Acker>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(acker) = acker.upgrade() else {
            return;
        };
        acker.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tags_below_the_first_unsettled_one_are_acked() {
        let mut state = State::new();
        let mut settle = |tag: u64, ack: bool| {
            state.settle(tag, ack);
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
}
