//! The service registry's conformance: the same tests against the
//! in-process backend and against a real etcd (started per test), then
//! what only etcd can do (be restarted, be unreachable).

mod support;

use futures::future::BoxFuture;
use futures::StreamExt;
use shimeji::registry::{
    Change, ChangeStream, InstanceRecord, KeyValue, LeaseId, Registry, RegistryBackend,
    RegistryError, Revision, Route,
};
use std::sync::Arc;
use std::time::Duration;
#[cfg(feature = "etcd")]
use support::Etcd;
use tokio::sync::Notify;

/// Generous bound for anything a test waits for.
const WITHIN: Duration = Duration::from_secs(15);

/// A registry under test, and the etcd it runs on (if it does).
struct Fixture {
    registry: Registry,
    #[cfg(feature = "etcd")]
    etcd: Option<Etcd>,
}

async fn memory() -> Fixture {
    Fixture {
        registry: Registry::memory(),
        #[cfg(feature = "etcd")]
        etcd: None,
    }
}

#[cfg(feature = "etcd")]
async fn etcd() -> Fixture {
    let etcd = Etcd::start();
    let registry = Registry::connect(&etcd.url()).await.expect("connect");
    Fixture {
        registry,
        etcd: Some(etcd),
    }
}

fn record(service: &str, id: &str) -> InstanceRecord {
    let mut record = InstanceRecord::new(service, id);
    record.version = "1.2.3".into();
    record.http = Some("127.0.0.1:8001".into());
    record.routes = vec![
        Route::new("GET", "/users/{id}"),
        Route::new("POST", "/users"),
    ];
    record
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WITHIN, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Runs each test body against both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $(#[tokio::test] async fn $name() { super::$name(super::memory().await).await })*
        }
        #[cfg(feature = "etcd")]
        mod etcd_backend {
            $(#[tokio::test] async fn $name() { super::$name(super::etcd().await).await })*
        }
    };
}

conformance!(
    register_snapshot_deregister,
    watcher_follows_register_and_deregister,
    raw_watch_replays_changes_in_order,
    a_crashed_instance_expires_with_its_lease,
    an_instance_registers_again_after_losing_its_lease,
    watcher_lists_again_after_compaction_and_misses_nothing,
    routers_report_and_the_wait_sees_them,
    bad_names_are_refused,
);

async fn register_snapshot_deregister(f: Fixture) {
    let r = &f.registry;
    let registration = r
        .register(record("users", "u1"), Duration::from_secs(10))
        .await
        .expect("register");
    assert_eq!(registration.times_registered(), 1);
    let snapshot = r.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.instances,
        vec![record_as_registered(&registration)]
    );
    assert!(snapshot.revision >= registration.revision());
    let registered_at = registration.revision();
    let revision = registration.deregister().await.expect("deregister");
    assert!(revision > registered_at, "{revision} after {registered_at}");
    let snapshot = r.snapshot().await.expect("snapshot");
    assert!(snapshot.instances.is_empty());
    assert!(snapshot.revision >= revision);
}

fn record_as_registered(registration: &shimeji::registry::Registration) -> InstanceRecord {
    let r = registration.record().clone();
    assert_eq!(r.version, "1.2.3");
    assert_eq!(r.pid, std::process::id());
    r
}

async fn watcher_follows_register_and_deregister(f: Fixture) {
    let r = &f.registry;
    let mut watcher = r.watcher();
    let first = within("the first list", watcher.wait_until(|t| t.lists >= 1)).await;
    assert!(first.connected);
    assert!(first.instances.is_empty());
    let a = r
        .register(record("users", "a"), Duration::from_secs(10))
        .await
        .expect("a");
    let b = r
        .register(record("orders", "b"), Duration::from_secs(10))
        .await
        .expect("b");
    let table = within("both", watcher.wait_until(|t| t.instances.len() == 2)).await;
    assert_eq!(table.get("users", "a"), Some(a.record()));
    assert_eq!(table.instances_of("orders").count(), 1);
    let gone = a.deregister().await.expect("deregister");
    let table = within("the delete", watcher.wait_until(|t| t.revision >= gone)).await;
    assert!(table.get("users", "a").is_none(), "{table:?}");
    assert!(table.get("orders", "b").is_some());
    assert_eq!(table.lists, 1, "followed by watching, not by listing again");
    drop(b);
}

async fn raw_watch_replays_changes_in_order(f: Fixture) {
    let r = &f.registry;
    let start = r.snapshot().await.expect("snapshot").revision + 1;
    let a = r
        .register(record("users", "a"), Duration::from_secs(10))
        .await
        .expect("a");
    let put = a.revision();
    let deleted = a.deregister().await.expect("deregister");
    let mut changes = r.watch_from(start).await.expect("watch");
    let mut seen: Vec<Change> = Vec::new();
    while seen.len() < 2 {
        let batch = within("the changes", changes.next()).await;
        seen.extend(batch.expect("stream open").expect("changes"));
    }
    assert!(
        matches!(&seen[0], Change::Put(kv) if kv.mod_revision == put && kv.key == "/shimeji/v1/instances/users/a")
    );
    assert!(matches!(&seen[1], Change::Delete { revision, .. } if *revision == deleted));
}

async fn a_crashed_instance_expires_with_its_lease(f: Fixture) {
    let r = &f.registry;
    let mut watcher = r.watcher();
    let a = r
        .register(record("users", "a"), Duration::from_secs(1))
        .await
        .expect("a");
    within("the record", watcher.wait_until(|t| t.instances.len() == 1)).await;
    // Dropped: no more renewals, as when the process dies.
    drop(a);
    let table = within("the expiry", watcher.wait_until(|t| t.instances.is_empty())).await;
    assert!(table.connected);
}

async fn an_instance_registers_again_after_losing_its_lease(f: Fixture) {
    let r = &f.registry;
    let mut watcher = r.watcher();
    let a = r
        .register(record("users", "a"), Duration::from_secs(2))
        .await
        .expect("a");
    let first_lease = a.lease();
    within("the record", watcher.wait_until(|t| t.instances.len() == 1)).await;
    // The registry loses the lease (a partition longer than the TTL ends
    // the same way): the record goes...
    let lost_at = r.backend().revoke(first_lease).await.expect("revoke");
    let table = within("the loss", watcher.wait_until(|t| t.revision >= lost_at)).await;
    assert!(table.instances.is_empty() || table.revision > lost_at);
    // ... and the instance puts it back by itself under a new lease.
    let table = within(
        "the re-registration",
        watcher.wait_until(|t| t.revision > lost_at && t.instances.len() == 1),
    )
    .await;
    assert_eq!(table.get("users", "a"), Some(a.record()));
    assert_eq!(a.times_registered(), 2);
    assert_ne!(a.lease(), first_lease);
    // And it keeps it: the new lease is renewed past its TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(r.snapshot().await.expect("snapshot").instances.len() == 1);
    assert_eq!(a.times_registered(), 2);
}

/// A backend whose first watch waits until the test opens the gate: the
/// test compacts the history a watcher is about to ask for.
struct Gated {
    inner: Arc<dyn RegistryBackend>,
    gate: Arc<Notify>,
    watches: std::sync::atomic::AtomicUsize,
}

impl RegistryBackend for Gated {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, RegistryError>> {
        self.inner.grant(ttl)
    }
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<bool, RegistryError>> {
        self.inner.keep_alive(lease)
    }
    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<Revision, RegistryError>> {
        self.inner.revoke(lease)
    }
    fn put(
        &self,
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> BoxFuture<'_, Result<Revision, RegistryError>> {
        self.inner.put(key, value, lease)
    }
    fn list(
        &self,
        prefix: String,
    ) -> BoxFuture<'_, Result<(Vec<KeyValue>, Revision), RegistryError>> {
        self.inner.list(prefix)
    }
    fn watch(
        &self,
        prefix: String,
        from: Revision,
    ) -> BoxFuture<'_, Result<ChangeStream, RegistryError>> {
        Box::pin(async move {
            let n = self
                .watches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n == 0 && prefix.contains("/instances/") {
                self.gate.notified().await;
            }
            self.inner.watch(prefix, from).await
        })
    }
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.inner.compact(revision)
    }
}

async fn watcher_lists_again_after_compaction_and_misses_nothing(f: Fixture) {
    let r = &f.registry;
    let a = r
        .register(record("users", "a"), Duration::from_secs(10))
        .await
        .expect("a");
    let gate = Arc::new(Notify::new());
    let gated = Registry::new(Gated {
        inner: r.backend().clone(),
        gate: gate.clone(),
        watches: Default::default(),
    });
    let mut watcher = gated.watcher();
    // It listed (a is there) and waits to watch from the next revision.
    let listed = within("the first list", watcher.wait_until(|t| t.lists == 1)).await;
    assert!(listed.get("users", "a").is_some());
    // Meanwhile: b comes, a goes, and the history is compacted.
    let b = r
        .register(record("users", "b"), Duration::from_secs(10))
        .await
        .expect("b");
    let gone = a.deregister().await.expect("deregister a");
    r.backend().compact(gone).await.expect("compact");
    let raw = r.watch_from(listed.revision + 1).await;
    let compacted = match raw {
        Err(e) => Some(e),
        Ok(mut s) => within("the raw watch", s.next())
            .await
            .and_then(Result::err),
    };
    assert!(
        matches!(compacted, Some(RegistryError::Compacted { .. })),
        "{compacted:?}"
    );
    gate.notify_one();
    // The watch fails (compacted): the watcher lists again and sees both changes.
    let table = within("the second list", watcher.wait_until(|t| t.lists >= 2)).await;
    assert!(table.get("users", "a").is_none(), "{table:?}");
    assert_eq!(table.get("users", "b"), Some(b.record()));
    assert!(table.revision >= gone);
    // And follows on from there.
    let c = r
        .register(record("users", "c"), Duration::from_secs(10))
        .await
        .expect("c");
    within("c", watcher.wait_until(|t| t.get("users", "c").is_some())).await;
    drop(c);
}

async fn routers_report_and_the_wait_sees_them(f: Fixture) {
    let r = &f.registry;
    let none = r
        .wait_applied(100, Duration::from_secs(5))
        .await
        .expect("wait");
    assert_eq!((none.routers, none.all_applied), (0, true));
    let router = r
        .router("gateway-1", Duration::from_secs(10))
        .await
        .expect("router");
    let a = r
        .register(record("users", "a"), Duration::from_secs(10))
        .await
        .expect("a");
    let gone = a.deregister().await.expect("deregister");
    let states = r.routers().await.expect("routers");
    assert_eq!(states.len(), 1);
    assert_eq!(
        (states[0].id.as_str(), states[0].applied_revision),
        ("gateway-1", 0)
    );
    let late = r
        .wait_applied(gone, Duration::from_millis(300))
        .await
        .expect("wait");
    assert!(!late.all_applied);
    assert_eq!(late.behind.len(), 1);
    // The router applies it a little later; the wait ends when it reports.
    let reporter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        router.report(gone).await.expect("report");
        router
    });
    let applied = r.wait_applied(gone, WITHIN).await.expect("wait");
    assert!(applied.all_applied, "{applied:?}");
    assert_eq!(applied.routers, 1);
    let router = reporter.await.expect("reporter");
    assert_eq!(router.applied(), gone);
    router.stop().await.expect("stop");
    assert!(r.routers().await.expect("routers").is_empty());
}

async fn bad_names_are_refused(f: Fixture) {
    let r = &f.registry;
    let bad = r
        .register(record("a/b", "x"), Duration::from_secs(10))
        .await;
    assert!(matches!(bad, Err(RegistryError::BadName(_))), "{bad:?}");
    let bad = r
        .register(record("users", ""), Duration::from_secs(10))
        .await;
    assert!(matches!(bad, Err(RegistryError::BadName(_))), "{bad:?}");
    let bad = r.router("with space", Duration::from_secs(10)).await;
    assert!(matches!(bad, Err(RegistryError::BadName(_))), "{bad:?}");
}

// What only etcd can do.

/// etcd drops a connection whose keep-alive pings come more often than its
/// `--grpc-keepalive-min-time` (5 s by default), and every watch with it;
/// an idle watcher must keep its first list.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn an_idle_watch_is_not_dropped_by_etcd() {
    let f = etcd().await;
    let r = f.registry.clone();
    let mut watcher = r.watcher();
    within("the first list", watcher.wait_until(|t| t.lists == 1)).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let table = watcher.table();
    assert!(table.connected);
    assert_eq!(table.lists, 1, "the watch was lost and listed again");
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn watcher_keeps_its_table_while_etcd_is_down_and_catches_up_after() {
    let mut f = etcd().await;
    let r = f.registry.clone();
    let mut watcher = r.watcher();
    let a = r
        .register(record("users", "a"), Duration::from_secs(2))
        .await
        .expect("a");
    within("a", watcher.wait_until(|t| t.instances.len() == 1)).await;
    let etcd = f.etcd.as_mut().expect("etcd");
    etcd.stop();
    let stale = within("the disconnect", watcher.wait_until(|t| !t.connected)).await;
    assert_eq!(stale.get("users", "a"), Some(a.record()), "fail static");
    // Longer than the TTL: the table stays as it was.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let table = watcher.table();
    assert!(!table.connected);
    assert_eq!(table.instances.len(), 1);
    // Back (same data: etcd resets every lease to its full TTL on restart).
    etcd.start_again(false);
    let back = within("the reconnect", watcher.wait_until(|t| t.connected)).await;
    assert!(back.lists >= 2);
    // The instance is there, kept alive by its keeper or registered again.
    let table = within(
        "a again",
        watcher.wait_until(|t| t.connected && t.instances.len() == 1),
    )
    .await;
    assert_eq!(table.get("users", "a"), Some(a.record()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(r.snapshot().await.expect("snapshot").instances.len(), 1);
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn an_instance_registers_again_in_an_etcd_that_lost_its_data() {
    let mut f = etcd().await;
    let r = f.registry.clone();
    let a = r
        .register(record("users", "a"), Duration::from_secs(2))
        .await
        .expect("a");
    let other = r
        .register(record("orders", "o"), Duration::from_secs(2))
        .await
        .expect("o");
    // More writes: the old cluster's revision is past where the new one will be.
    for _ in 0..3 {
        let x = r
            .register(record("extra", "x"), Duration::from_secs(2))
            .await
            .expect("x");
        x.deregister().await.expect("deregister x");
    }
    let mut watcher = r.watcher();
    let before = within("both", watcher.wait_until(|t| t.instances.len() == 2)).await;
    let etcd = f.etcd.as_mut().expect("etcd");
    // A new cluster on the same address: no keys, no leases, revisions from 1.
    etcd.start_again(true);
    let table = within(
        "both again",
        watcher.wait_until(|t| t.connected && t.lists >= 2 && t.instances.len() == 2),
    )
    .await;
    assert!(
        table.revision < before.revision,
        "revisions start over: {} then {}",
        before.revision,
        table.revision
    );
    assert_eq!(a.times_registered(), 2);
    assert_eq!(other.times_registered(), 2);
    // The watcher follows the new cluster.
    let gone = other.deregister().await.expect("deregister");
    let table = within("the delete", watcher.wait_until(|t| t.revision >= gone)).await;
    assert_eq!(table.instances.len(), 1);
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_registry_that_cannot_be_reached_fails_the_registration() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let r = Registry::connect(&format!("etcd://127.0.0.1:{port}"))
        .await
        .expect("lazy connect");
    let failed = r
        .register(record("users", "a"), Duration::from_secs(2))
        .await;
    assert!(
        matches!(failed, Err(RegistryError::Unreachable(_))),
        "{failed:?}"
    );
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn registry_urls_are_checked() {
    for bad in [
        "etcd://",
        "etcd://host",
        "etcd://host:notaport",
        "consul://x:1",
        "etcd://u:p@h:1",
    ] {
        let error = Registry::connect(bad).await.expect_err(bad);
        assert!(
            matches!(error, RegistryError::BadUrl { .. }),
            "{bad}: {error:?}"
        );
        assert!(!error.to_string().contains(":p@"), "no password in {error}");
    }
    assert_eq!(
        Registry::connect("memory").await.expect("memory").name(),
        "memory"
    );
    let two = Registry::connect("etcd://127.0.0.1:1,127.0.0.1:2")
        .await
        .expect("two endpoints");
    assert_eq!(two.name(), "etcd");
}
