//! Prometheus metrics: every service is measured with no code of its own.
//!
//! Recording is off until the process turns it on: by setting
//! `METRICS_ADDRESS` in the configuration (the runner then serves
//! `/metrics`, `/health/live` and `/health/ready` there), or by calling
//! [`enable`] and serving [`render`] yourself. Services started while it is
//! on are measured, on handles each service (and each method of a
//! generated client) resolves once. A run costs two readings of the CPU's
//! time stamp counter and one histogram observation: two plain stores into
//! the running thread's own shard. An in-process call served within its
//! caller's poll is observed once for both the entrypoint and the client
//! series (see `handover` in the source).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `shimeji_entrypoint_calls_total` | service, entrypoint, outcome | runs by outcome: `ok`, or the error's type |
//! | `shimeji_entrypoint_duration_seconds` | service, entrypoint | run time histogram |
//! | `shimeji_entrypoint_in_flight` | service, entrypoint | runs in progress now, all instances |
//! | `shimeji_workers_busy` | service | workers running now, all instances |
//! | `shimeji_workers_max` | service | `max_workers`, all instances |
//! | `shimeji_workers_waiting` | service | work waiting for a free worker (saturation) |
//! | `shimeji_client_calls_total` | service, method, outcome | calls made by clients in this process |
//! | `shimeji_client_call_duration_seconds` | service, method | call time, as the caller saw it |
//! | `shimeji_events_dispatched_total` | source, event_type | events published |
//! | `shimeji_events_handled_total` | service, handler, source, event_type, outcome | event handler runs |
//! | `shimeji_transport_reconnects_total` | transport | reconnections after a broker loss |
//! | `shimeji_transport_messages_dropped_total` | transport, reason | messages given up on: `malformed` (nowhere to answer), `reply_unconfirmed` (its reply was never confirmed) |
//! | `shimeji_websocket_closed_total` | reason | WebSockets closed: `client`, `message_too_large`, `slow_consumer`, `protocol_error` |
//!
//! Label values come only from what the code declares, never from the
//! network, so the number of series stays bounded whatever peers send:
//! services, entrypoints and event handlers as `#[service]` declares them;
//! `outcome` is `ok`, one of shimeji's own error types (`MethodNotFound`,
//! `Timeout`, `Cancelled`, …), an error type the entrypoint declares (its
//! error's `#[derive(Exception)]` names), or else `other` (a remote error
//! passed on, say). A client's `method` is its own when the name is
//! written in the code (generated clients, `call_typed`) or names an
//! entrypoint running in this process; a name made at run time that does
//! not (an unknown method sent over `/ws`, say) counts as method `other`.
//! An event type made at run time is its own only when its service
//! declares it (`#[service(events = [...])]`).
//!
//! Saturation is per service, as `max_workers` is: `shimeji_workers_busy`
//! against `shimeji_workers_max`, and `shimeji_workers_waiting` above zero
//! when work queues for a worker. A run dropped before it finished (an
//! in-process caller that timed out, say) counts with outcome `Cancelled`.
//!
//! Your own metrics join the same scrape through [`registry`]:
//!
//! ```
//! use prometheus_client::metrics::counter::Counter;
//!
//! let orders = Counter::<u64>::default();
//! shimeji::metrics::registry()
//!     .lock()
//!     .unwrap()
//!     .register("shop_orders", "Orders placed", orders.clone());
//! orders.inc();
//! assert!(shimeji::metrics::render().contains("shop_orders_total 1"));
//! ```

use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, RwLock, Weak};

pub use prometheus_client;

/// The clock durations are measured with: the CPU's time stamp counter
/// where it is reliable (12 ns a reading here against 37 ns for the system
/// clock), the system's monotonic clock elsewhere. Readings stay raw
/// counter values; only a difference is turned into nanoseconds.
static CLOCK: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);

/// A raw reading of [`CLOCK`].
#[derive(Clone, Copy)]
pub(crate) struct Instant(u64);

impl Instant {
    pub(crate) fn now() -> Self {
        Instant(CLOCK.raw())
    }

    /// Nanoseconds from `earlier` to this reading (0 if it is later).
    pub(crate) fn nanos_since(self, earlier: Instant) -> u64 {
        if self.0 <= earlier.0 {
            return 0;
        }
        CLOCK.delta_as_nanos(earlier.0, self.0)
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns recording on for this process. Services started from now on are
/// measured; clients and event dispatchers record at once.
pub fn enable() {
    // The clock calibrates on first use: not on a worker's time.
    let _ = Instant::now();
    ENABLED.store(true, Ordering::Relaxed);
}

/// Turns recording off for this process: clients, event dispatchers and
/// services started from now on record nothing. Services already started
/// with recording on go on recording.
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// Whether recording is on.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The registry `/metrics` renders. Register your own metrics in it.
pub fn registry() -> &'static Mutex<Registry> {
    &global().registry
}

/// The metrics in the OpenMetrics text format, as `/metrics` serves them.
pub fn render() -> String {
    let mut text = String::new();
    let registry = lock(registry());
    // Writing to a String cannot fail; a collector that fails is a bug
    // that must not take the endpoint down.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::error!(%error, "cannot encode the metrics");
    }
    text
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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

fn thread_number() -> usize {
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
struct Histogram {
    shards: Box<[Shard]>,
}

impl Histogram {
    fn new() -> Self {
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

    fn observe(&self, nanos: u64) {
        let bucket = BUCKET_NANOS.partition_point(|&bound| bound < nanos);
        let (shard, owned) = self.shard();
        add(&shard.counts[bucket], 1, owned);
        add(&shard.sum_nanos, nanos, owned);
    }

    /// Counts a run begun (observed when it ends).
    fn begin(&self) {
        let (shard, owned) = self.shard();
        add(&shard.begun, 1, owned);
    }

    /// The shards summed.
    fn snapshot(&self) -> Snapshot {
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
struct Snapshot {
    /// Per bucket, not cumulative; the last is `+Inf`.
    counts: [u64; 18],
    sum_nanos: u64,
    begun: u64,
}

impl Snapshot {
    fn of(parts: &[&Histogram]) -> Self {
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

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Runs begun and not yet observed. (Shards are read one after
    /// another, so a scrape can see an end before its beginning: never
    /// below zero.)
    fn in_flight(&self) -> u64 {
        self.begun.saturating_sub(self.count())
    }

    fn encode(&self, encoder: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
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

/// The outcome every error type not declared folds into.
pub(crate) const OTHER: &str = "other";

/// The error types shimeji itself raises: always outcomes of their own.
const BUILT_IN_ERRORS: &[&str] = &[
    "MethodNotFound",
    "IncorrectSignature",
    "MalformedRequest",
    "UnserializableValueError",
    "WorkerPanic",
    "ServiceStopping",
    "WorkerKilled",
    "UnknownService",
    "Timeout",
    "Encode",
    "Decode",
    "Transport",
    "DispatchError",
    "ConfigError",
    CANCELLED,
];

/// Error counts by type; touched only when a run fails. Only declared
/// types get a count of their own: shimeji's [`BUILT_IN_ERRORS`] and those
/// the entrypoint's error type declares (see
/// [`Exception::declared_types`](crate::Exception::declared_types)). Any
/// other type (a remote error passed on, a `RemoteError` made up at run
/// time) counts as [`OTHER`], so a peer cannot add label values.
struct Errors(Mutex<ErrorCounts>);

struct ErrorCounts {
    declared: &'static [&'static str],
    counts: Vec<(&'static str, u64)>,
}

impl Errors {
    fn new(declared: &'static [&'static str]) -> Self {
        Errors(Mutex::new(ErrorCounts {
            declared,
            counts: Vec::new(),
        }))
    }

    /// The outcome label of error type `exc_type`.
    fn label(declared: &'static [&'static str], exc_type: &str) -> &'static str {
        BUILT_IN_ERRORS
            .iter()
            .chain(declared)
            .find(|t| **t == exc_type)
            .copied()
            .unwrap_or(OTHER)
    }

    fn add(&self, exc_type: &str) {
        let mut errors = lock(&self.0);
        let label = Self::label(errors.declared, exc_type);
        match errors.counts.iter_mut().find(|(t, _)| *t == label) {
            Some((_, n)) => *n += 1,
            None => errors.counts.push((label, 1)),
        }
    }

    /// Declares the error types of a caller that knows them, when the
    /// series was made by one that did not.
    fn declare(&self, declared: &'static [&'static str]) {
        let mut errors = lock(&self.0);
        if errors.declared.is_empty() {
            errors.declared = declared;
        }
    }

    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        lock(&self.0).counts.clone()
    }
}

/// The handles of one entrypoint, resolved when its service starts.
pub(crate) struct EntrypointMetrics {
    service: &'static str,
    entrypoint: &'static str,
    /// `(source, event_type)` for an event handler.
    event: Option<(&'static str, &'static str)>,
    /// The error types the entrypoint declares.
    declared: &'static [&'static str],
    duration: Histogram,
    /// Runs served inline for a measuring client of this process (see
    /// [`handover`]): observed once, they count in this entrypoint's series
    /// and in the client series of `service.entrypoint` alike.
    inline: Histogram,
    errors: Errors,
}

/// One run of an entrypoint, from start to outcome.
pub(crate) struct Run<'a> {
    metrics: &'a EntrypointMetrics,
    started: Instant,
    /// The client call that handed its start over, if one did.
    caller: Option<handover::Token>,
}

impl EntrypointMetrics {
    pub(crate) fn start(&self) -> Run<'_> {
        self.duration.begin();
        let (started, caller) = match handover::take_start() {
            Some((started, token)) => (started, Some(token)),
            None => (Instant::now(), None),
        };
        Run {
            metrics: self,
            started,
            caller,
        }
    }

    pub(crate) fn entrypoint(&self) -> &'static str {
        self.entrypoint
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::of(&[&self.duration, &self.inline])
    }
}

/// The outcome of a run dropped before it finished (its caller went away:
/// an in-process call that timed out, say).
const CANCELLED: &str = "Cancelled";

impl Run<'_> {
    /// Records the run's time and outcome: `None` for ok, else the error type.
    pub(crate) fn finish(self, error: Option<&str>) {
        self.record(error);
        // Recorded: nothing left for `drop` (a `Run` owns nothing).
        std::mem::forget(self);
    }

    fn record(&self, error: Option<&str>) {
        let m = self.metrics;
        let nanos = Instant::now().nanos_since(self.started);
        match self.caller {
            // Still inside the caller's first poll: the caller counts the
            // call through this observation instead of making its own.
            Some(caller) if handover::recorded_for(caller) => m.inline.observe(nanos),
            _ => m.duration.observe(nanos),
        }
        if let Some(exc_type) = error {
            m.errors.add(exc_type);
        }
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.record(Some(CANCELLED));
    }
}

/// How an in-process call is measured once instead of twice. A client
/// hands its start reading over before the first poll of its call; an
/// entrypoint that runs within that poll, on the same thread, starts its run
/// at that reading, and if it also finishes within that poll it records the
/// run in its `inline` histogram, which the scrape adds to the client series
/// of the same `service.method` too, and tells the client so. Both series
/// then hold the same interval (the client's start to the entrypoint's end)
/// for the price of two clock readings and one observation. Anything else
/// (another thread, a later poll, a remote transport) is measured on each
/// side by itself.
pub(crate) mod handover {
    use super::Instant;
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
                    0 => ((super::thread_number() as u64) << 40) + 1,
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
}

/// The handles of what clients call: one per `(service, method)`.
pub(crate) struct CallMetrics {
    service: Cow<'static, str>,
    method: Cow<'static, str>,
    duration: Histogram,
    errors: Errors,
}

impl CallMetrics {
    /// Records a call: `nanos` as the client timed it, or `None` when the
    /// entrypoint that served it inline recorded the time for both (see
    /// [`handover`]); `error` is the outcome's error type, if any.
    pub(crate) fn record(&self, nanos: Option<u64>, error: Option<&str>) {
        if let Some(nanos) = nanos {
            self.duration.observe(nanos);
        }
        if let Some(exc_type) = error {
            self.errors.add(exc_type);
        }
    }
}

/// What a running service instance reports about its workers.
pub(crate) trait WorkerStats: Send + Sync {
    fn service(&self) -> &'static str;
    /// `(busy, max, waiting)`.
    fn workers(&self) -> (usize, usize, usize);
}

/// The call series, by service then method: found with borrowed names, so
/// a lookup allocates nothing.
type Calls = HashMap<Cow<'static, str>, HashMap<Cow<'static, str>, &'static CallMetrics>>;

/// Events published, by source then event type.
type Dispatched = HashMap<&'static str, HashMap<Cow<'static, str>, Arc<AtomicU64>>>;

struct Global {
    registry: Mutex<Registry>,
    entrypoints: Mutex<Vec<Arc<EntrypointMetrics>>>,
    calls: RwLock<Calls>,
    dispatched: RwLock<Dispatched>,
    /// `(source, event_type)` of the events services declare they dispatch.
    declared_events: Mutex<Vec<(&'static str, String)>>,
    instances: Mutex<Vec<Weak<dyn WorkerStats>>>,
    reconnects: Mutex<Vec<(&'static str, u64)>>,
    dropped: Mutex<Vec<((&'static str, &'static str), u64)>>,
    /// By [`WebSocketClose`] reason.
    websocket_closed: [AtomicU64; WebSocketClose::ALL.len()],
}

fn global() -> &'static Global {
    static GLOBAL: LazyLock<Global> = LazyLock::new(|| {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collector));
        Global {
            registry: Mutex::new(registry),
            entrypoints: Mutex::default(),
            calls: RwLock::default(),
            dispatched: RwLock::default(),
            declared_events: Mutex::default(),
            instances: Mutex::default(),
            reconnects: Mutex::default(),
            dropped: Mutex::default(),
            websocket_closed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    });
    &GLOBAL
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// The handles of `service.entrypoint`, shared by every instance of the
/// service. `errors` are the error types the entrypoint declares.
pub(crate) fn entrypoint(
    service: &'static str,
    entrypoint: &'static str,
    event: Option<(&'static str, &'static str)>,
    errors: &'static [&'static str],
) -> Arc<EntrypointMetrics> {
    let mut all = lock(&global().entrypoints);
    if let Some(found) = all
        .iter()
        .find(|m| m.service == service && m.entrypoint == entrypoint)
    {
        return found.clone();
    }
    let created = Arc::new(EntrypointMetrics {
        service,
        entrypoint,
        event,
        declared: errors,
        duration: Histogram::new(),
        inline: Histogram::new(),
        errors: Errors::new(errors),
    });
    all.push(created.clone());
    created
}

/// Records the event types service `source` declares it dispatches: an
/// event type made at run time gets a series of its own only when declared.
pub(crate) fn declare_events(source: &'static str, event_types: Vec<String>) {
    let mut all = lock(&global().declared_events);
    for event_type in event_types {
        if !all.iter().any(|(s, t)| *s == source && *t == event_type) {
            all.push((source, event_type));
        }
    }
}

/// Reports a service instance's workers until it is dropped.
pub(crate) fn watch_instance(instance: Weak<dyn WorkerStats>) {
    let mut all = lock(&global().instances);
    all.retain(|w| w.strong_count() > 0);
    all.push(instance);
}

/// The handles of calls to `service.method`, found in the registry's map
/// (generated clients keep theirs per call site and look once). `errors`
/// are the error types the method declares, when the caller knows them
/// (a generated client does).
///
/// Names become label values only when they are declared: written in the
/// code (borrowed `'static` names, as generated clients and
/// [`Client::call_typed`](crate::Client::call_typed) give), or naming an
/// entrypoint of a service running in this process. Any other call (names
/// made at run time, from a WebSocket frame say) counts under method
/// `other` of its service, or of service `other` when that is not known
/// either: a peer cannot add series.
#[allow(clippy::ptr_arg)]
pub(crate) fn call(
    service: &Cow<'static, str>,
    method: &Cow<'static, str>,
    errors: &'static [&'static str],
) -> &'static CallMetrics {
    if let Some(found) = find_call(service, method) {
        if !errors.is_empty() {
            found.errors.declare(errors);
        }
        return found;
    }
    let (service, method, errors) = call_labels(service, method, errors);
    if let Some(found) = find_call(&service, &method) {
        return found;
    }
    let mut calls = write(&global().calls);
    let methods = calls.entry(service.clone()).or_default();
    methods.entry(method.clone()).or_insert_with(|| {
        // Lives as long as the process, like the registry that lists it.
        Box::leak(Box::new(CallMetrics {
            service,
            method,
            duration: Histogram::new(),
            errors: Errors::new(errors),
        }))
    })
}

fn find_call(service: &str, method: &str) -> Option<&'static CallMetrics> {
    read(&global().calls)
        .get(service)
        .and_then(|methods| methods.get(method))
        .copied()
}

/// The labels (and declared errors) of a call not seen before; see [`call`].
/// Takes the `Cow`s to tell names written in the code (borrowed) from
/// names made at run time.
#[allow(clippy::ptr_arg)]
fn call_labels(
    service: &Cow<'static, str>,
    method: &Cow<'static, str>,
    errors: &'static [&'static str],
) -> (
    Cow<'static, str>,
    Cow<'static, str>,
    &'static [&'static str],
) {
    let entrypoints = lock(&global().entrypoints);
    let local = entrypoints
        .iter()
        .find(|m| m.service == service && m.entrypoint == method);
    if let (Cow::Borrowed(_), Cow::Borrowed(_)) = (service, method) {
        let errors = match local {
            Some(m) if errors.is_empty() => m.declared,
            _ => errors,
        };
        return (service.clone(), method.clone(), errors);
    }
    if let Some(m) = local {
        return (
            Cow::Borrowed(m.service),
            Cow::Borrowed(m.entrypoint),
            m.declared,
        );
    }
    let known = entrypoints
        .iter()
        .map(|m| m.service)
        .find(|s| *s == service)
        .or_else(
            || match read(&global().calls).get_key_value(service.as_ref()) {
                Some((Cow::Borrowed(s), _)) => Some(*s),
                _ => None,
            },
        );
    (
        Cow::Borrowed(known.unwrap_or(OTHER)),
        Cow::Borrowed(OTHER),
        &[],
    )
}

/// Counts one event published. An event type is a label value when it is
/// written in the code (borrowed) or declared by its service
/// (`#[service(events = [...])]`); any other counts as `other`.
#[allow(clippy::ptr_arg)]
pub(crate) fn event_dispatched(source: &'static str, event_type: &Cow<'static, str>) {
    if count_dispatched(source, event_type) {
        return;
    }
    let label = match event_type {
        Cow::Borrowed(_) => event_type.clone(),
        Cow::Owned(t) => {
            let declared = lock(&global().declared_events)
                .iter()
                .any(|(s, d)| *s == source && d == t);
            if declared {
                event_type.clone()
            } else {
                Cow::Borrowed(OTHER)
            }
        }
    };
    if count_dispatched(source, &label) {
        return;
    }
    write(&global().dispatched)
        .entry(source)
        .or_default()
        .entry(label)
        .or_default()
        .fetch_add(1, Ordering::Relaxed);
}

/// Counts one event in an existing series; false when there is none.
fn count_dispatched(source: &'static str, event_type: &str) -> bool {
    match read(&global().dispatched)
        .get(source)
        .and_then(|types| types.get(event_type))
    {
        Some(n) => {
            n.fetch_add(1, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// Counts one reconnection of `transport`. Counted whether recording is on
/// or not: it is rare, and a scrape after turning recording on should see it.
#[cfg(feature = "amqp")]
pub(crate) fn reconnected(transport: &'static str) {
    let mut all = lock(&global().reconnects);
    match all.iter_mut().find(|(t, _)| *t == transport) {
        Some((_, n)) => *n += 1,
        None => all.push((transport, 1)),
    }
}

/// Counts one message `transport` gave up on, for `reason` (a fixed set:
/// see the table above). Counted whether recording is on or not: it is rare.
#[cfg(feature = "amqp")]
pub(crate) fn dropped(transport: &'static str, reason: &'static str) {
    let mut all = lock(&global().dropped);
    match all.iter_mut().find(|(k, _)| *k == (transport, reason)) {
        Some((_, n)) => *n += 1,
        None => all.push(((transport, reason), 1)),
    }
}

/// Why the server closed a WebSocket: the `reason` label of
/// `shimeji_websocket_closed_total`, a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebSocketClose {
    /// The client closed it, or the connection ended.
    Client,
    /// A message was larger than `websocket_max_message_size`.
    MessageTooLarge,
    /// The client did not read: its outgoing queue was full.
    SlowConsumer,
    /// The client broke the WebSocket protocol.
    ProtocolError,
}

impl WebSocketClose {
    const ALL: [WebSocketClose; 4] = [
        WebSocketClose::Client,
        WebSocketClose::MessageTooLarge,
        WebSocketClose::SlowConsumer,
        WebSocketClose::ProtocolError,
    ];

    fn label(self) -> &'static str {
        match self {
            WebSocketClose::Client => "client",
            WebSocketClose::MessageTooLarge => "message_too_large",
            WebSocketClose::SlowConsumer => "slow_consumer",
            WebSocketClose::ProtocolError => "protocol_error",
        }
    }
}

/// Counts one WebSocket closed. Counted whether recording is on or not,
/// like reconnections: it is rare next to calls.
#[cfg(feature = "http")]
pub(crate) fn websocket_closed(reason: WebSocketClose) {
    global().websocket_closed[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// Runs by outcome: `ok` (every run but the failed ones), then each error type.
fn outcomes(duration: &Snapshot, errors: &Errors) -> Vec<(&'static str, u64)> {
    let errors = errors.snapshot();
    let failed: u64 = errors.iter().map(|(_, n)| n).sum();
    let ok = duration.count().saturating_sub(failed);
    std::iter::once(("ok", ok)).chain(errors).collect()
}

/// Renders shimeji's own metrics on every scrape.
#[derive(Debug)]
struct Collector;

fn counter(encoder: &mut MetricEncoder, value: u64) -> Result<(), std::fmt::Error> {
    encoder.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(encoder: &mut MetricEncoder, value: i64) -> Result<(), std::fmt::Error> {
    encoder.encode_gauge(&value)
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = global();
        let entrypoints = lock(&g.entrypoints).clone();
        let runs: Vec<Snapshot> = entrypoints.iter().map(|m| m.snapshot()).collect();

        let mut e = encoder.encode_descriptor(
            "shimeji_entrypoint_calls",
            "Entrypoint runs by outcome: ok, or the error's type",
            None,
            MetricType::Counter,
        )?;
        for (m, runs) in entrypoints.iter().zip(&runs) {
            for (outcome, n) in outcomes(runs, &m.errors) {
                let labels = [
                    ("service", m.service),
                    ("entrypoint", m.entrypoint),
                    ("outcome", outcome),
                ];
                counter(&mut e.encode_family(&labels)?, n)?;
            }
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_entrypoint_duration",
            "How long entrypoint runs took",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (m, runs) in entrypoints.iter().zip(&runs) {
            let labels = [("service", m.service), ("entrypoint", m.entrypoint)];
            runs.encode(&mut e.encode_family(&labels)?)?;
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_entrypoint_in_flight",
            "Entrypoint runs in progress now, all instances",
            None,
            MetricType::Gauge,
        )?;
        for (m, runs) in entrypoints.iter().zip(&runs) {
            let labels = [("service", m.service), ("entrypoint", m.entrypoint)];
            let n = i64::try_from(runs.in_flight()).unwrap_or(i64::MAX);
            gauge(&mut e.encode_family(&labels)?, n)?;
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_events_handled",
            "Event handler runs by outcome",
            None,
            MetricType::Counter,
        )?;
        for (m, runs) in entrypoints.iter().zip(&runs) {
            let Some((source, event_type)) = m.event else {
                continue;
            };
            for (outcome, n) in outcomes(runs, &m.errors) {
                let labels = [
                    ("service", m.service),
                    ("handler", m.entrypoint),
                    ("source", source),
                    ("event_type", event_type),
                    ("outcome", outcome),
                ];
                counter(&mut e.encode_family(&labels)?, n)?;
            }
        }

        // Workers, summed over the instances of each service.
        let mut workers: Vec<(&'static str, [usize; 3])> = Vec::new();
        for instance in lock(&g.instances).iter().filter_map(Weak::upgrade) {
            let (busy, max, waiting) = instance.workers();
            let service = instance.service();
            match workers.iter_mut().find(|(s, _)| *s == service) {
                Some((_, sum)) => {
                    sum[0] += busy;
                    sum[1] += max;
                    sum[2] += waiting;
                }
                None => workers.push((service, [busy, max, waiting])),
            }
        }
        for (i, (name, help)) in [
            ("shimeji_workers_busy", "Workers running now, all instances"),
            ("shimeji_workers_max", "max_workers, summed over instances"),
            (
                "shimeji_workers_waiting",
                "Work waiting for a free worker: above zero, the service is saturated",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (service, values) in &workers {
                let labels = [("service", *service)];
                gauge(
                    &mut e.encode_family(&labels)?,
                    i64::try_from(values[i]).unwrap_or(i64::MAX),
                )?;
            }
        }

        let calls: Vec<&'static CallMetrics> = read(&g.calls)
            .values()
            .flat_map(|methods| methods.values().copied())
            .collect();
        // A client's calls: those it timed, and those the entrypoint it
        // called timed for it (in-process calls served inline).
        let timed: Vec<Snapshot> = calls
            .iter()
            .map(|c| {
                let served = entrypoints
                    .iter()
                    .find(|m| m.service == c.service && m.entrypoint == c.method);
                match served {
                    Some(m) => Snapshot::of(&[&c.duration, &m.inline]),
                    None => c.duration.snapshot(),
                }
            })
            .collect();
        let mut e = encoder.encode_descriptor(
            "shimeji_client_calls",
            "Calls made by clients of this process, by outcome",
            None,
            MetricType::Counter,
        )?;
        for (m, timed) in calls.iter().zip(&timed) {
            for (outcome, n) in outcomes(timed, &m.errors) {
                let labels = [
                    ("service", m.service.as_ref()),
                    ("method", m.method.as_ref()),
                    ("outcome", outcome),
                ];
                counter(&mut e.encode_family(&labels)?, n)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "shimeji_client_call_duration",
            "How long calls took, as the caller saw it",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (m, timed) in calls.iter().zip(&timed) {
            let labels = [
                ("service", m.service.as_ref()),
                ("method", m.method.as_ref()),
            ];
            timed.encode(&mut e.encode_family(&labels)?)?;
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_events_dispatched",
            "Events published",
            None,
            MetricType::Counter,
        )?;
        for (source, types) in read(&g.dispatched).iter() {
            for (event_type, n) in types {
                let labels = [("source", *source), ("event_type", event_type.as_ref())];
                counter(&mut e.encode_family(&labels)?, n.load(Ordering::Relaxed))?;
            }
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_transport_reconnects",
            "Reconnections after the broker connection was lost",
            None,
            MetricType::Counter,
        )?;
        for (transport, n) in lock(&g.reconnects).iter() {
            counter(&mut e.encode_family(&[("transport", *transport)])?, *n)?;
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_transport_messages_dropped",
            "Messages a transport gave up on, by reason",
            None,
            MetricType::Counter,
        )?;
        for ((transport, reason), n) in lock(&g.dropped).iter() {
            let labels = [("transport", *transport), ("reason", *reason)];
            counter(&mut e.encode_family(&labels)?, *n)?;
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_websocket_closed",
            "WebSockets closed, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in WebSocketClose::ALL.iter().zip(&g.websocket_closed) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                counter(&mut e.encode_family(&[("reason", reason.label())])?, n)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_entrypoint_records_for_its_caller_only_within_the_callers_first_poll() {
        let start = Instant::now();
        // A client polls its call; the entrypoint runs inline.
        let outer = handover::hand_over(start);
        let (_, outer_token) = handover::take_start().expect("start offered");
        assert!(handover::take_start().is_none(), "taken once");
        // That entrypoint calls another service, served inline too.
        let inner = handover::hand_over(start);
        let (_, inner_token) = handover::take_start().expect("start offered");
        assert!(handover::recorded_for(inner_token));
        assert!(inner.end(), "the inner client is told");
        // A third call whose entrypoint waits: its first poll ends first.
        let waiting = handover::hand_over(start);
        let (_, waiting_token) = handover::take_start().expect("start offered");
        assert!(!waiting.end(), "nothing recorded during the poll");
        assert!(
            !handover::recorded_for(waiting_token),
            "finishing later, it records for itself"
        );
        // Back in the outer entrypoint, still in its caller's first poll.
        assert!(handover::recorded_for(outer_token));
        assert!(outer.end());
        assert!(!handover::recorded_for(outer_token), "that poll is over");
        assert!(handover::take_start().is_none(), "nothing offered now");
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
