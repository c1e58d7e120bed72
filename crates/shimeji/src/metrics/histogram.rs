//! The latency histogram: fixed buckets, one shard per thread, so an
//! observation on the hot path is two plain stores on cache lines no other
//! thread writes. Shards are summed into a [`Snapshot`] when scraped.

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency buckets, in seconds: from 10 µs (in-process calls) to 10 s.
const BUCKETS: [f64; 17] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

const BUCKET_NANOS: [u64; 17] = {
    let mut nanos = [0u64; 17];
    let mut i = 0;
    while i < 17 {
        nanos[i] = (BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

/// Threads that get a histogram shard of their own; later threads share
/// one more.
const OWNED: usize = 31;

/// One thread's share of a histogram: its own cache lines.
#[repr(align(64))]
struct Shard {
    /// One per bucket, and the last for `+Inf`.
    counts: [AtomicU64; 18],
    sum_nanos: AtomicU64,
    /// Runs begun (entrypoints only): in flight is begun − observed.
    begun: AtomicU64,
}

/// Adds `n` to a shard's counter: a plain store when this thread owns the
/// shard (it is the only writer), an atomic addition on the shared one.
fn add(counter: &AtomicU64, n: u64, owned: bool) {
    if owned {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    } else {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

thread_local! {
    /// This thread's number, given on first use and never reused.
    static THREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// This thread's number: the histogram shard it writes, and the high bits
/// of the hand-over tokens it gives (see [`super::handover`]).
pub(super) fn thread_number() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    THREAD
        .try_with(|n| match n.get() {
            usize::MAX => {
                let given = NEXT.fetch_add(1, Ordering::Relaxed);
                n.set(given);
                given
            }
            given => given,
        })
        .unwrap_or(usize::MAX)
}

/// A histogram with fixed buckets, one shard per thread. The first
/// [`OWNED`] threads each write only their own shard, so an observation is
/// two plain stores on cache lines no other thread writes (exact: one
/// writer per shard); later threads share the last shard with atomic
/// additions. Shards are summed, and buckets made cumulative, when rendered.
pub(super) struct Histogram {
    shards: Box<[Shard]>,
}

impl Histogram {
    pub(super) fn new() -> Self {
        Histogram {
            shards: (0..=OWNED)
                .map(|_| Shard {
                    counts: std::array::from_fn(|_| AtomicU64::new(0)),
                    sum_nanos: AtomicU64::new(0),
                    begun: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// The running thread's shard, and whether the thread owns it.
    fn shard(&self) -> (&Shard, bool) {
        let thread = thread_number();
        match self.shards.get(thread).filter(|_| thread < OWNED) {
            Some(own) => (own, true),
            None => (&self.shards[OWNED], false),
        }
    }

    pub(super) fn observe(&self, nanos: u64) {
        let bucket = BUCKET_NANOS.partition_point(|&bound| bound < nanos);
        let (shard, owned) = self.shard();
        add(&shard.counts[bucket], 1, owned);
        add(&shard.sum_nanos, nanos, owned);
    }

    /// Counts a run begun (observed when it ends).
    pub(super) fn begin(&self) {
        let (shard, owned) = self.shard();
        add(&shard.begun, 1, owned);
    }

    /// The shards summed.
    pub(super) fn snapshot(&self) -> Snapshot {
        let mut total = Snapshot::default();
        for shard in self.shards.iter() {
            total.add(&Snapshot {
                counts: shard.counts.each_ref().map(|n| n.load(Ordering::Relaxed)),
                sum_nanos: shard.sum_nanos.load(Ordering::Relaxed),
                begun: shard.begun.load(Ordering::Relaxed),
            });
        }
        total
    }
}

/// A histogram's values at one moment (or several histograms' added up).
#[derive(Default)]
pub(super) struct Snapshot {
    /// Per bucket, not cumulative; the last is `+Inf`.
    counts: [u64; 18],
    sum_nanos: u64,
    begun: u64,
}

impl Snapshot {
    pub(super) fn of(parts: &[&Histogram]) -> Self {
        let mut total = Snapshot::default();
        for part in parts {
            total.add(&part.snapshot());
        }
        total
    }

    fn add(&mut self, other: &Snapshot) {
        for (t, n) in self.counts.iter_mut().zip(other.counts) {
            *t += n;
        }
        self.sum_nanos = self.sum_nanos.wrapping_add(other.sum_nanos);
        self.begun = self.begun.wrapping_add(other.begun);
    }

    pub(super) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Runs begun and not yet observed. (Shards are read one after
    /// another, so a scrape can see an end before its beginning: never
    /// below zero.)
    pub(super) fn in_flight(&self) -> u64 {
        self.begun.saturating_sub(self.count())
    }

    pub(super) fn encode(&self, encoder: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per bucket; the encoder makes them cumulative (`f64::MAX` is `+Inf`).
        let buckets: Vec<(f64, u64)> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, n)| (BUCKETS.get(i).copied().unwrap_or(f64::MAX), *n))
            .collect();
        let sum = self.sum_nanos as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, self.count(), &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::DescriptorEncoder;
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::{Registry, Unit};
    use std::sync::Arc;

    #[test]
    fn histogram_counts_every_observation_from_every_thread() {
        let h = Arc::new(Histogram::new());
        let threads: Vec<_> = (0..2 * OWNED)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        h.observe(20_000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 2 * OWNED as u64 * 1000);
        assert_eq!(s.sum_nanos, 2 * OWNED as u64 * 1000 * 20_000);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new();
        h.observe(3_000);
        h.observe(3_000_000);
        h.observe(60_000_000_000);
        assert_eq!(h.snapshot().count(), 3);
        let mut registry = Registry::default();
        struct One(Arc<Histogram>);
        impl std::fmt::Debug for One {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("One")
            }
        }
        impl prometheus_client::collector::Collector for One {
            fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                let mut e = encoder.encode_descriptor(
                    "t",
                    "test",
                    Some(&Unit::Seconds),
                    MetricType::Histogram,
                )?;
                self.0.snapshot().encode(&mut e)
            }
        }
        let h = Arc::new(h);
        registry.register_collector(Box::new(One(h.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("t_seconds_bucket{le=\"0.00001\"} 1"),
            "{text}"
        );
        assert!(text.contains("t_seconds_bucket{le=\"0.005\"} 2"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("t_seconds_count 3"), "{text}");
    }
}
