//! Write your own dependency: a small in-memory key-value store.
//!
//! ```text
//! cargo run --example kv_store
//! cargo test --example kv_store
//! ```
//!
//! A dependency is a field of the service struct whose type implements
//! [`Dependency`]: the container calls its lifecycle hooks once per service
//! instance and its per-call hooks around every worker. The service uses it
//! as a plain field; a test puts another value in that field.

use shimeji::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// An in-memory key-value store of counts. Clones share one store, so `main`
/// can keep a handle and read the counts after the service has stopped.
#[derive(Clone, Default)]
struct KvStore {
    inner: Arc<Inner>,
}

/// What the clones of a [`KvStore`] share. The prefix goes in front of
/// every key; it comes from the config key `kv_store_prefix` at setup.
#[derive(Default)]
struct Inner {
    prefix: OnceLock<String>,
    values: Mutex<BTreeMap<String, u64>>,
    stats: Mutex<Stats>,
}

/// The per-call hooks' counts: workers started (`worker_setup`), failed
/// (`worker_result`) and finished (`worker_teardown`).
#[derive(Debug, Default)]
struct Stats {
    started: usize,
    failed: usize,
    finished: usize,
}

impl KvStore {
    /// The stored name of `key`: the prefix, then the key.
    fn key(&self, key: &str) -> String {
        let prefix = self.inner.prefix.get().map_or("", String::as_str);
        format!("{prefix}{key}")
    }

    /// The map of values; a panic elsewhere cannot poison it for good.
    fn values(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.inner.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value at `key`, if any.
    fn get(&self, key: &str) -> Option<u64> {
        self.values().get(&self.key(key)).copied()
    }

    /// Stores `value` at `key`. Before setup, keys get no prefix.
    fn set(&self, key: &str, value: u64) {
        let key = self.key(key);
        self.values().insert(key, value);
    }

    /// Adds one to the value at `key` (absent counts as 0); returns the new value.
    fn incr(&self, key: &str) -> u64 {
        let mut values = self.values();
        let value = values.entry(self.key(key)).or_default();
        *value = value.saturating_add(1);
        *value
    }

    /// What the per-call hooks counted so far.
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.inner.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Dependency for KvStore {
    /// Reads the optional `kv_store_prefix` key from the runner's configuration.
    fn setup<'a>(&'a self, ctx: &'a SetupContext) -> BoxFuture<'a, Result<(), DependencyError>> {
        Box::pin(async move {
            let prefix = ctx
                .config()
                .get::<String>("kv_store_prefix")
                .map_err(|e| DependencyError::new("kv_store", e.to_string()))?
                .unwrap_or_default();
            let service = ctx.service();
            println!("  [kv_store] setup for {service}: prefix {prefix:?}");
            let _ = self.inner.prefix.set(prefix);
            Ok(())
        })
    }

    /// Nothing to connect to; says how much it starts with.
    fn start(&self) -> BoxFuture<'_, Result<(), DependencyError>> {
        println!("  [kv_store] start with {} keys", self.values().len());
        Box::pin(async { Ok(()) })
    }

    /// Runs after the service drained its workers: reports what it held.
    fn stop(&self) -> BoxFuture<'_, ()> {
        let keys: Vec<_> = self.values().keys().cloned().collect();
        println!("  [kv_store] stop holding {} keys: {keys:?}", keys.len());
        Box::pin(async {})
    }

    /// Before each worker: count it.
    fn worker_setup(&self, _worker: &WorkerContext) {
        self.stats().started += 1;
    }

    /// After each worker, with its outcome: count and report failures.
    fn worker_result(&self, worker: &WorkerContext, result: Result<(), &RemoteError>) {
        if let Err(error) = result {
            self.stats().failed += 1;
            let call_id = worker.call_id().unwrap_or_default();
            println!("  [kv_store] worker {call_id} failed: {}", error.exc_type);
        }
    }

    /// Last, after each worker: count it as finished.
    fn worker_teardown(&self, _worker: &WorkerContext) {
        self.stats().finished += 1;
    }

    /// Without this the container skips the three per-call hooks above.
    fn has_worker_hooks(&self) -> bool {
        true
    }
}

/// The service: counts things by name in its store.
#[derive(Default, Dependencies)]
struct Counter {
    /// Found by `#[derive(Dependencies)]` because `KvStore: Dependency`.
    store: KvStore,
}

#[service(name = "counter")]
impl Counter {
    /// Adds one to `key`; returns the new count.
    #[rpc]
    async fn incr(&self, key: String) -> u64 {
        self.store.incr(&key)
    }

    /// The count at `key`, or `None` if it was never incremented.
    #[rpc]
    async fn get(&self, key: String) -> Option<u64> {
        self.store.get(&key)
    }

    /// Sets the count at `key` back to 0.
    #[rpc]
    async fn reset(&self, key: String) {
        self.store.set(&key, 0)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep a clone of the store: the runner owns the service from here on.
    let store = KvStore::default();
    let config = Config::from_env().set("kv_store_prefix", "demo:");
    println!("starting counter (config kv_store_prefix = \"demo:\")");
    let running = ServiceRunner::with_config(config)
        .service(Counter {
            store: store.clone(),
        })
        .start()
        .await?;

    let counter: CounterClient = running.client();
    for key in ["apples", "apples", "pears", "apples"] {
        let count = counter.incr(key.into()).await?;
        println!("counter.incr({key:?}) -> {count}");
    }
    counter.reset("pears".into()).await?;
    println!("counter.reset(\"pears\")");
    for key in ["apples", "pears", "plums"] {
        let count = counter.get(key.into()).await?;
        println!("counter.get({key:?}) -> {count:?}");
    }

    // A call with a mistyped argument fails inside the worker: the hooks see it.
    let bad = serde_json::json!({ "key": 7 });
    match running.dynamic_client().call("counter", "incr", bad).await {
        Ok(value) => println!("counter.incr(key=7) -> {value} (unexpected)"),
        Err(err) => println!("counter.incr(key=7) -> error {}", err.exc_type()),
    }

    println!("stopping");
    running.stop().await;
    println!("the per-call hooks counted {:?}", store.stats());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test swaps in a pre-filled store: the service is plain data.
    #[tokio::test]
    async fn incr_counts_on_from_the_stored_value() -> Result<(), Box<dyn std::error::Error>> {
        let store = KvStore::default();
        store.set("visits", 41);
        let worker = shimeji::testing::worker(Counter { store }).await?;
        let counter: CounterClient = worker.client();
        assert_eq!(counter.incr("visits".into()).await?, 42);
        assert_eq!(worker.service().store.stats().finished, 1);
        Ok(())
    }
}
