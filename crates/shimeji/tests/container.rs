//! The container: `max_workers`, graceful stop, dependency hooks.

use futures::future::BoxFuture;
use shimeji::dependency::{Dependency, DependencyError, SetupContext};
use shimeji::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

#[derive(Dependencies)]
struct Busy {
    gauge: Arc<Gauge>,
}

#[service(name = "busy")]
impl Busy {
    #[rpc]
    async fn work(&self, millis: u64) -> u64 {
        let now = self.gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.gauge.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.gauge.now.fetch_sub(1, Ordering::SeqCst);
        millis
    }
}

async fn busy(config: Config) -> (RunningServices, Arc<Gauge>) {
    let gauge = Arc::new(Gauge::default());
    let running = ServiceRunner::with_config(config)
        .service(Busy {
            gauge: gauge.clone(),
        })
        .start()
        .await
        .unwrap();
    (running, gauge)
}

#[tokio::test]
async fn max_workers_bounds_concurrency() {
    let (running, gauge) = busy(Config::new().set("max_workers", 3)).await;
    let client: BusyClient = running.client();
    let calls: Vec<_> = (0..12).map(|_| client.work(20)).collect();
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.unwrap(), 20);
    }
    assert_eq!(gauge.peak.load(Ordering::SeqCst), 3);
    running.stop().await;
}

#[tokio::test]
async fn max_workers_defaults_to_ten() {
    let (running, gauge) = busy(Config::new()).await;
    let client: BusyClient = running.client();
    let calls: Vec<_> = (0..25).map(|_| client.work(20)).collect();
    futures::future::join_all(calls).await;
    assert_eq!(gauge.peak.load(Ordering::SeqCst), 10);
    running.stop().await;
}

#[tokio::test]
async fn stop_finishes_work_in_flight_and_takes_no_more() {
    let (running, _) = busy(Config::new()).await;
    let client: BusyClient = running.client();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.work(200).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = tokio::spawn(running.stop());
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The call in flight completes; a new one finds nobody serving.
    let late = client.work(1).await.unwrap_err();
    assert!(late.is("UnknownService"), "{late:?}");
    assert!(!stopping.is_finished(), "stop waits for the work in flight");
    assert_eq!(in_flight.await.unwrap().unwrap(), 200);
    tokio::time::timeout(Duration::from_secs(2), stopping)
        .await
        .expect("stop returns once drained")
        .unwrap();
}

#[tokio::test]
async fn the_drain_timeout_bounds_the_stop() {
    let (running, _) = busy(Config::new().set("drain_timeout", 0.1)).await;
    let client: BusyClient = running.client();
    let stuck = tokio::spawn(async move { client.work(60_000).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = tokio::time::Instant::now();
    running.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
    let err = stuck.await.unwrap().unwrap_err();
    assert!(err.is("WorkerKilled"), "{err:?}");
}

/// Records every hook call, in order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn push(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push(what.into());
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl Dependency for Recorder {
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        self.push(format!("setup {}", ctx.service()));
        Box::pin(async { Ok(()) })
    }
    fn start(&self) -> BoxFuture<'_, Result<(), DependencyError>> {
        self.push("start");
        Box::pin(async { Ok(()) })
    }
    fn draining(&self) -> BoxFuture<'_, ()> {
        self.push("draining");
        Box::pin(async {})
    }
    fn stop(&self) -> BoxFuture<'_, ()> {
        self.push("stop");
        Box::pin(async {})
    }
    fn worker_setup(&self, worker: &WorkerContext) {
        self.push(format!(
            "worker_setup {}",
            worker.entrypoint().unwrap_or("?")
        ));
    }
    fn worker_result(&self, _worker: &WorkerContext, result: Result<(), &RemoteError>) {
        match result {
            Ok(()) => self.push("worker_result ok"),
            Err(e) => self.push(format!("worker_result {}", e.exc_type)),
        }
    }
    fn worker_teardown(&self, _worker: &WorkerContext) {
        self.push("worker_teardown");
    }
    fn has_worker_hooks(&self) -> bool {
        true
    }
}

#[derive(Debug, thiserror::Error, Exception)]
#[error("refused")]
struct Refused;

#[derive(Dependencies)]
struct Hooked {
    recorder: Recorder,
    label: String,
}

#[service(name = "hooked")]
impl Hooked {
    #[rpc]
    async fn ok(&self) -> String {
        self.recorder.push("running");
        self.label.clone()
    }

    #[rpc]
    async fn fail(&self) -> Result<(), Refused> {
        Err(Refused)
    }
}

#[tokio::test]
async fn dependency_hooks_run_in_order() {
    let recorder = Recorder::default();
    let running = ServiceRunner::with_config(Config::new())
        .service(Hooked {
            recorder: recorder.clone(),
            label: "x".into(),
        })
        .start()
        .await
        .unwrap();
    assert_eq!(recorder.take(), vec!["setup hooked", "start"]);
    let client: HookedClient = running.client();
    assert_eq!(client.ok().await.unwrap(), "x");
    assert_eq!(
        recorder.take(),
        vec![
            "worker_setup ok",
            "running",
            "worker_result ok",
            "worker_teardown"
        ]
    );
    client.fail().await.unwrap_err();
    assert_eq!(
        recorder.take(),
        vec![
            "worker_setup fail",
            "worker_result Refused",
            "worker_teardown"
        ]
    );
    running.stop().await;
    assert_eq!(recorder.take(), vec!["draining", "stop"]);
}

/// `Arc<D>` and `Option<D>` fields are dependencies too; `None` does nothing.
#[derive(Dependencies)]
struct Wrapped {
    shared: Arc<Recorder>,
    present: Option<Recorder>,
    absent: Option<Recorder>,
}

#[service(name = "wrapped")]
impl Wrapped {
    #[rpc]
    async fn ping(&self) {}
}

#[tokio::test]
async fn arc_and_option_fields_are_dependencies() {
    let (shared, present) = (Recorder::default(), Recorder::default());
    let wrapped = Wrapped {
        shared: Arc::new(shared.clone()),
        present: Some(present.clone()),
        absent: None,
    };
    assert_eq!(Dependencies::dependencies(&wrapped).len(), 3);
    assert!(!Dependency::has_worker_hooks(&wrapped.absent));
    let running = ServiceRunner::with_config(Config::new())
        .service(wrapped)
        .start()
        .await
        .unwrap();
    for recorder in [&shared, &present] {
        assert_eq!(recorder.take(), vec!["setup wrapped", "start"]);
    }
    let client: WrappedClient = running.client();
    client.ping().await.unwrap();
    for recorder in [&shared, &present] {
        assert_eq!(
            recorder.take(),
            vec!["worker_setup ping", "worker_result ok", "worker_teardown"]
        );
    }
    running.stop().await;
    for recorder in [&shared, &present] {
        assert_eq!(recorder.take(), vec!["draining", "stop"]);
    }
}

/// Holds callers until it is released, as a long poll or a stream does.
#[derive(Default)]
struct Held {
    release: tokio::sync::Notify,
    released: std::sync::atomic::AtomicBool,
}

impl Dependency for Held {
    fn draining(&self) -> BoxFuture<'_, ()> {
        self.released.store(true, Ordering::SeqCst);
        self.release.notify_waiters();
        Box::pin(async {})
    }
}

#[derive(Dependencies)]
struct LongPoll {
    held: Held,
}

#[service(name = "long_poll")]
impl LongPoll {
    /// Waits until the dependency lets it go: "released".
    #[rpc]
    async fn wait(&self) -> String {
        let notified = self.held.release.notified();
        if !self.held.released.load(Ordering::SeqCst) {
            notified.await;
        }
        "released".to_string()
    }
}

#[tokio::test]
async fn draining_ends_long_lived_work_before_the_drain_waits_for_it() {
    let running = ServiceRunner::with_config(Config::new().set("drain_timeout", 60))
        .service(LongPoll {
            held: Held::default(),
        })
        .start()
        .await
        .unwrap();
    let client: LongPollClient = running.client();
    let waiting = tokio::spawn(async move { client.wait().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "the call returned before the stop");
    // Without the hook the stop would wait the 60 s drain timeout, then
    // kill the worker.
    tokio::time::timeout(Duration::from_secs(10), running.stop())
        .await
        .expect("the stop waited for the held call instead of releasing it first");
    assert_eq!(waiting.await.unwrap().unwrap(), "released");
}

struct Broken;

impl Dependency for Broken {
    fn setup<'a>(&'a self, _ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        Box::pin(async { Err(DependencyError::new("database", "connection refused")) })
    }
}

#[derive(Dependencies)]
struct NeedsDb {
    db: Broken,
}

#[service(name = "needs_db")]
impl NeedsDb {
    #[rpc]
    async fn ping(&self) {}
}

#[tokio::test]
async fn a_dependency_that_fails_to_set_up_fails_the_start_and_names_itself() {
    let recorder = Recorder::default();
    let result = ServiceRunner::with_config(Config::new())
        .service(Hooked {
            recorder: recorder.clone(),
            label: "x".into(),
        })
        .service(NeedsDb { db: Broken })
        .start()
        .await;
    let err = result.err().expect("start must fail");
    assert_eq!(
        err.to_string(),
        "service `needs_db`: dependency `database` failed: connection refused"
    );
    // The service that had started is stopped again.
    assert_eq!(
        recorder.take(),
        vec!["setup hooked", "start", "draining", "stop"]
    );
}

#[tokio::test]
async fn a_bad_config_value_fails_the_start_with_the_key_named() {
    let err = ServiceRunner::with_config(Config::new().set("max_workers", "many"))
        .start()
        .await
        .err()
        .expect("start must fail");
    assert!(err.to_string().contains("max_workers"), "{err}");
    let err = ServiceRunner::with_config(Config::new().set("max_workers", 0))
        .start()
        .await
        .err()
        .expect("start must fail");
    assert!(err.to_string().contains("max_workers"), "{err}");
}

/// Ready once its eager timer has filled it, as a cache loaded from
/// another service would be.
#[derive(Default)]
struct Filled {
    filled: std::sync::atomic::AtomicBool,
    fill: tokio::sync::Notify,
    never: bool,
}

impl Dependency for Filled {
    fn ready(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let filled = self.fill.notified();
                if self.filled.load(Ordering::SeqCst) && !self.never {
                    return;
                }
                filled.await;
            }
        })
    }
}

#[derive(Dependencies)]
struct Cached {
    cache: Filled,
}

#[service(name = "cached")]
impl Cached {
    #[timer(interval = "60s", eager = true)]
    async fn fill(&self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.cache.filled.store(true, Ordering::SeqCst);
        self.cache.fill.notify_waiters();
    }

    #[rpc]
    async fn filled(&self) -> bool {
        self.cache.filled.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn the_start_waits_until_every_dependency_is_ready() {
    let running = ServiceRunner::with_config(Config::new())
        .service(Cached {
            cache: Filled::default(),
        })
        .start()
        .await
        .unwrap();
    // Ready (and so registered, and 200 on /health/ready) only once filled.
    assert!(running.health().readiness().ready);
    let client: CachedClient = running.client();
    assert!(
        client.filled().await.unwrap(),
        "the start returned before the dependency was ready"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_dependency_never_ready_delays_the_start_by_ready_timeout_only() {
    let running = ServiceRunner::with_config(Config::new().set("ready_timeout", 0.5))
        .service(Cached {
            cache: Filled {
                never: true,
                ..Filled::default()
            },
        })
        .start();
    let running = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the start waited past ready_timeout")
        .unwrap();
    assert!(running.health().readiness().ready);
    running.stop().await;
}
