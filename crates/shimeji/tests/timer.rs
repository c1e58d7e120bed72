//! Timer entrypoints: interval, eager start, no overlap, clean stop.

use shimeji::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Counts {
    runs: AtomicUsize,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
}

#[derive(Dependencies)]
struct Ticker {
    counts: Arc<Counts>,
}

#[service(name = "ticker")]
impl Ticker {
    /// Takes longer than its interval: runs must not overlap.
    #[timer(interval = "20ms")]
    async fn slow(&self) {
        let now = self.counts.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.counts.most_at_once.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(70)).await;
        self.counts.running.fetch_sub(1, Ordering::SeqCst);
        self.counts.runs.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Dependencies)]
struct Eager {
    runs: Arc<AtomicUsize>,
}

#[service(name = "eager")]
impl Eager {
    #[timer(interval = "1h", eager = true)]
    async fn at_start(&self) {
        self.runs.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Dependencies)]
struct Lazy {
    runs: Arc<AtomicUsize>,
}

#[service(name = "lazy")]
impl Lazy {
    #[timer(interval = "100ms")]
    async fn later(&self) -> Result<(), RemoteError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn runs_never_overlap_and_stop_with_the_service() {
    let counts = Arc::new(Counts::default());
    let running = ServiceRunner::with_config(Config::new())
        .service(Ticker {
            counts: counts.clone(),
        })
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    running.stop().await;
    let runs = counts.runs.load(Ordering::SeqCst);
    assert_eq!(
        counts.most_at_once.load(Ordering::SeqCst),
        1,
        "runs overlapped"
    );
    assert!((2..=6).contains(&runs), "{runs} runs of 70 ms in 400 ms");
    assert_eq!(
        counts.running.load(Ordering::SeqCst),
        0,
        "stop waits for the run in progress"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        counts.runs.load(Ordering::SeqCst),
        runs,
        "no run after the stop"
    );
}

#[tokio::test]
async fn eager_runs_at_start_and_the_default_waits_one_interval() {
    let eager = Arc::new(AtomicUsize::new(0));
    let lazy = Arc::new(AtomicUsize::new(0));
    let running = ServiceRunner::with_config(Config::new())
        .service(Eager {
            runs: eager.clone(),
        })
        .service(Lazy { runs: lazy.clone() })
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(eager.load(Ordering::SeqCst), 1);
    assert_eq!(
        lazy.load(Ordering::SeqCst),
        0,
        "not before its first interval"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(lazy.load(Ordering::SeqCst) >= 1);
    running.stop().await;
}

#[test]
fn timers_are_described() {
    let d = Ticker::describe();
    assert_eq!(d.timers[0].name, "slow");
    assert_eq!(d.timers[0].interval_ms, 20);
    assert!(!d.timers[0].eager);
    assert_eq!(Eager::describe().timers[0].interval_ms, 3_600_000);
}
