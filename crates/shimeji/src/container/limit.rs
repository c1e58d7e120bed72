//! `max_workers`: a counting limit with a lock-free fast path.
//!
//! A worker takes a slot before it runs and gives it back when it ends.
//! Taking and giving back a slot is one atomic operation each while slots
//! are free; a worker that finds none waits to be woken. Draining takes
//! every slot: once it holds them all, no worker is running.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::Notify;

pub(crate) struct WorkerLimit {
    free: AtomicUsize,
    waiting: AtomicUsize,
    closed: AtomicBool,
    wake: Notify,
}

/// A slot held by a running worker; dropping it gives the slot back.
pub(crate) struct Slot<'a>(&'a WorkerLimit);

/// The limit was closed: the instance has stopped.
#[derive(Debug)]
pub(crate) struct Closed;

impl WorkerLimit {
    pub(crate) fn new(slots: usize) -> Self {
        WorkerLimit {
            free: AtomicUsize::new(slots),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Slots free now.
    pub(crate) fn free(&self) -> usize {
        self.free.load(Ordering::Relaxed)
    }

    /// Workers waiting for a slot now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        let mut free = self.free.load(Ordering::Relaxed);
        loop {
            if free < n {
                return false;
            }
            match self.free.compare_exchange_weak(
                free,
                free - n,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => free = actual,
            }
        }
    }

    async fn take(&self, n: usize) -> Result<(), Closed> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Closed);
            }
            if self.try_take(n) {
                return Ok(());
            }
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return Err(Closed);
            }
            if self.try_take(n) {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return Ok(());
            }
            notified.await;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Takes one slot if one is free now.
    pub(crate) fn try_acquire(&self) -> Option<Slot<'_>> {
        // `then`, not `then_some`: a `Slot` made and dropped gives a slot back.
        (!self.closed.load(Ordering::Acquire) && self.try_take(1)).then(|| Slot(self))
    }

    /// Takes one slot, waiting while all are in use.
    pub(crate) async fn acquire(&self) -> Result<Slot<'_>, Closed> {
        if !self.closed.load(Ordering::Acquire) && self.try_take(1) {
            return Ok(Slot(self));
        }
        self.take(1).await.map(|()| Slot(self))
    }

    /// Takes `n` slots and keeps them: resolves once no worker holds one.
    pub(crate) async fn acquire_all(&self, n: usize) -> Result<(), Closed> {
        self.take(n).await
    }

    /// Refuses every slot from now on and wakes the waiters.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    fn release(&self) {
        self.free.fetch_add(1, Ordering::Release);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            // Wake everyone: a waiter for many slots must not swallow the
            // wake-up meant for a waiter for one.
            self.wake.notify_waiters();
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn bounds_and_wakes() {
        let limit = Arc::new(WorkerLimit::new(2));
        let a = limit.acquire().await.unwrap();
        let _b = limit.acquire().await.unwrap();
        let l2 = limit.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a third worker must wait");
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken when a slot frees")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn try_acquire_takes_only_free_slots() {
        let limit = WorkerLimit::new(1);
        let held = limit.try_acquire().expect("one slot is free");
        for _ in 0..3 {
            assert!(limit.try_acquire().is_none(), "no second slot");
        }
        assert_eq!(limit.free(), 0, "a refused try gives nothing back");
        drop(held);
        assert_eq!(limit.free(), 1);
        limit.close();
        assert!(limit.try_acquire().is_none(), "closed");
    }

    #[tokio::test]
    async fn acquire_all_waits_for_running_workers_then_close_refuses() {
        let limit = Arc::new(WorkerLimit::new(3));
        let slot = limit.acquire().await.unwrap();
        let l2 = limit.clone();
        let drain = tokio::spawn(async move { l2.acquire_all(3).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!drain.is_finished());
        drop(slot);
        tokio::time::timeout(Duration::from_secs(1), drain)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        limit.close();
        assert!(limit.acquire().await.is_err());
    }
}
