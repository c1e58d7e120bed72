//! Passive ejection: an instance that refused `eject_after` connections in
//! a row leaves the rotation for `eject_for`.
//!
//! The registry's lease is the main liveness signal (a crashed instance's
//! record goes when its lease expires); ejection covers the seconds before
//! that, and instances that are registered but cannot be reached from the
//! gateway. Only connect failures count: a slow or failing answer is the
//! service's business, not a sign that the instance is gone. When the
//! cool-down ends the instance gets traffic again; one more connect failure
//! ejects it again at once (it is still on its streak).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since the first call in this process: a clock an atomic
/// can hold.
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One instance's connect failure streak and ejection.
#[derive(Debug, Default)]
pub(crate) struct Ejection {
    /// Connect failures in a row.
    failures: AtomicU32,
    /// Ejected until this [`now_ms`]; 0 when not ejected.
    until_ms: AtomicU64,
}

impl Ejection {
    /// Whether the instance is out of rotation at `now` (a [`now_ms`]).
    pub(crate) fn is_ejected(&self, now: u64) -> bool {
        self.until_ms.load(Ordering::Relaxed) > now
    }

    /// A connection was made: the streak ends.
    pub(crate) fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connection failed at `now`. True when this failure ejects the
    /// instance (it was not ejected and the streak reached `after`).
    pub(crate) fn record_failure(&self, now: u64, after: u32, cool_down: Duration) -> bool {
        let streak = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if streak < after || self.is_ejected(now) {
            return false;
        }
        let until = now.saturating_add(u64::try_from(cool_down.as_millis()).unwrap_or(u64::MAX));
        self.until_ms.store(until.max(1), Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_millis(100);

    #[test]
    fn ejects_after_a_streak_and_only_for_the_cool_down() {
        let e = Ejection::default();
        assert!(!e.record_failure(1000, 3, COOL));
        assert!(!e.record_failure(1000, 3, COOL));
        assert!(!e.is_ejected(1000));
        assert!(e.record_failure(1000, 3, COOL), "the third ejects");
        assert!(e.is_ejected(1050));
        assert!(
            !e.record_failure(1050, 3, COOL),
            "already out: not counted twice"
        );
        assert!(!e.is_ejected(1100), "back after the cool-down");
        assert!(
            e.record_failure(1100, 3, COOL),
            "still on its streak: out again"
        );
    }

    #[test]
    fn a_success_ends_the_streak() {
        let e = Ejection::default();
        e.record_failure(0, 2, COOL);
        e.record_success();
        assert!(!e.record_failure(0, 2, COOL));
        assert!(e.record_failure(0, 2, COOL));
    }
}
