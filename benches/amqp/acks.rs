//! The raw server's acks, sent as shimeji's transport sends them: one
//! `basic.ack multiple` up to the highest finished delivery below the first
//! unfinished one, while the previous ack is on its way; deliveries held
//! behind an unfinished one for 20 ms are acked one by one.

use amqprs::channel::{BasicAckArguments, Channel};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long finished deliveries wait behind an unfinished one (shimeji's `HOLD`).
const HOLD: Duration = Duration::from_millis(20);

struct State {
    /// The smallest tag not finished.
    next: u64,
    /// Since when `next` has been that.
    next_since: Instant,
    /// Finished tags above `next`.
    early: BTreeSet<u64>,
    /// Finished tags not acked yet.
    to_ack: BTreeSet<u64>,
}

impl State {
    fn finish(&mut self, tag: u64, now: Instant) {
        if tag < self.next {
            return;
        }
        self.early.insert(tag);
        self.to_ack.insert(tag);
        let before = self.next;
        while self.early.remove(&self.next) {
            self.next += 1;
        }
        if self.next != before {
            self.next_since = now;
        }
    }

    /// `(ack multiple up to, tags to ack one by one, when to look again)`.
    fn due(&mut self, now: Instant) -> (Option<u64>, Vec<u64>, Option<Instant>) {
        let multiple = self.to_ack.range(..self.next).next_back().copied();
        if self.to_ack.range(self.next + 1..).next().is_none() {
            return (multiple, Vec::new(), None);
        }
        let until = self.next_since + HOLD;
        if now < until {
            return (multiple, Vec::new(), Some(until));
        }
        let singles = self
            .to_ack
            .split_off(&(self.next + 1))
            .into_iter()
            .collect();
        (multiple, singles, None)
    }
}

/// The acks of one consumer channel.
pub struct Acker {
    channel: Channel,
    state: Mutex<State>,
    /// The highest tag acked on the wire, held while an ack is sent.
    sent: tokio::sync::Mutex<u64>,
    wake: Arc<Notify>,
}

impl Acker {
    /// An acker for `channel`, with its sending task.
    pub fn new(channel: Channel) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let acker = Arc::new(Acker {
            channel,
            state: Mutex::new(State {
                next: 1,
                next_since: Instant::now(),
                early: BTreeSet::new(),
                to_ack: BTreeSet::new(),
            }),
            sent: tokio::sync::Mutex::new(0),
            wake: wake.clone(),
        });
        tokio::spawn(send_loop(Arc::downgrade(&acker), wake));
        acker
    }

    /// The delivery `tag` is done: ack it.
    pub fn ack(&self, tag: u64) {
        self.state
            .lock()
            .expect("ack state")
            .finish(tag, Instant::now());
        self.wake.notify_one();
    }

    async fn flush(&self) -> Option<Instant> {
        let mut sent = self.sent.lock().await;
        let (multiple, singles, recheck) =
            self.state.lock().expect("ack state").due(Instant::now());
        for tag in singles {
            let _ = self
                .channel
                .basic_ack(BasicAckArguments::new(tag, false))
                .await;
        }
        let Some(upto) = multiple.filter(|t| *t > *sent) else {
            return recheck;
        };
        if self
            .channel
            .basic_ack(BasicAckArguments::new(upto, true))
            .await
            .is_ok()
        {
            *sent = upto;
            self.state
                .lock()
                .expect("ack state")
                .to_ack
                .retain(|t| *t > upto);
        }
        recheck
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
