//! `shimeji haproxy-sync` against a real etcd and a real HAProxy (the
//! sample configuration `haproxy/haproxy.cfg`), each started per test:
//! instances that register are routed to as soon as the sync reports it;
//! instances that deregister are drained and deleted with no request lost;
//! HAProxy restarted gets its servers back; what cannot be routed is said.
#![cfg(feature = "etcd")]

mod platform;

use platform::etcd::Etcd;
use platform::haproxy::Haproxy;
use platform::instance::Instance;
use platform::load::{client, Load};
use platform::{eventually, Sync};
use serde_json::Value;
use shimeji::registry::{InstanceRecord, Registry};
use std::time::Duration;
use tokio::task::block_in_place;

/// Generous bound for anything a test waits for.
const WITHIN: Duration = Duration::from_secs(15);

/// Not a test: an instance of `notes` the tests start as a child process.
#[test]
#[ignore = "an instance of the notes service, started by the other tests in a process of its own"]
fn instance() {
    platform::instance::serve_from_env();
}

/// `GET /notes/version` through HAProxy: status and version.
async fn get_version(http: &reqwest::Client, haproxy: &Haproxy) -> (u16, String) {
    let answer = http
        .get(haproxy.url("/notes/version"))
        .send()
        .await
        .expect("HAProxy answers");
    let status = answer.status().as_u16();
    let body: Value =
        serde_json::from_slice(&answer.bytes().await.expect("a body")).expect("a JSON body");
    let version = body["version"]
        .as_str()
        .map_or_else(|| body.to_string(), String::from);
    (status, version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_follows_register_and_deregister() {
    let etcd = Etcd::start();
    let haproxy = Haproxy::start();
    let registry = Registry::connect(&etcd.url()).await.expect("etcd");
    let sync = Sync::start(&etcd.url(), &registry, &haproxy, &[]).await;
    let http = client();

    // No instance yet: HAProxy's JSON 503; a path no service serves: 404.
    let (status, body) = get_version(&http, &haproxy).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ServiceUnavailable"), "{body}");
    let answer = http.get(haproxy.url("/nowhere")).send().await.expect("404");
    assert_eq!(answer.status().as_u16(), 404);

    // An instance registers: once the sync reports its revision, HAProxy
    // routes to it, from the very first request.
    let mut a = block_in_place(|| Instance::start(&etcd.url(), "a", None));
    let applied = registry
        .wait_applied(a.revision, WITHIN)
        .await
        .expect("routers");
    assert!(
        applied.all_applied && applied.routers == 1,
        "{applied:?}\n{}",
        sync.log()
    );
    assert_eq!(get_version(&http, &haproxy).await, (200, "a".to_string()));
    assert_eq!(haproxy.servers("notes"), vec![(a.id.clone(), 0)]);

    // A second one: both take requests.
    let mut b = block_in_place(|| Instance::start(&etcd.url(), "b", None));
    let applied = registry
        .wait_applied(b.revision, WITHIN)
        .await
        .expect("routers");
    assert!(applied.all_applied, "{applied:?}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let (status, version) = get_version(&http, &haproxy).await;
        assert_eq!(status, 200, "{version}");
        seen.insert(version);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "only {seen:?} answered");

    // Under load, `a` stops the way shimeji instances do (deregister, wait
    // for the routers, close): its server is drained, then deleted, and no
    // request fails.
    let load = Load::start(&haproxy.url(""), 4, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let said = block_in_place(|| a.terminate());
    assert!(
        said.starts_with("deregistered; every router applied it") && said.contains("routers=1"),
        "{said}"
    );
    eventually("a's server deleted", WITHIN, || {
        !haproxy
            .servers("notes")
            .iter()
            .any(|(name, _)| name == &a.id)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outcomes = load.stop().await;
    assert!(
        outcomes.errors.is_empty() && outcomes.non_2xx.is_empty(),
        "{:?} {:?}\n{}",
        outcomes.errors,
        outcomes.non_2xx,
        sync.log()
    );
    assert!(outcomes.ok() > 0, "{outcomes:?}");
    let log = sync.log();
    assert!(
        log.contains("server draining") && log.contains("server deleted"),
        "{log}"
    );
    for _ in 0..10 {
        assert_eq!(get_version(&http, &haproxy).await, (200, "b".to_string()));
    }

    // The last instance goes: nothing to route to.
    block_in_place(|| b.terminate());
    eventually("b's server deleted", WITHIN, || {
        haproxy.servers("notes").is_empty()
    })
    .await;
    assert_eq!(get_version(&http, &haproxy).await.0, 503);

    // Stopped, the sync no longer reports.
    sync.stop();
    assert!(registry.routers().await.expect("routers").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_sync_recovers_and_says_what_it_cannot_route() {
    let etcd = Etcd::start();
    let mut haproxy = Haproxy::start();
    let registry = Registry::connect(&etcd.url()).await.expect("etcd");

    // A server left in the backend by an earlier run: the sync owns the
    // backend, so it goes.
    let added = haproxy.command("add server notes/left-over 127.0.0.1:1");
    assert!(added.contains("New server registered"), "{added}");
    assert_eq!(haproxy.command("enable server notes/left-over").trim(), "");

    let sync = Sync::start(&etcd.url(), &registry, &haproxy, &[]).await;
    let a = block_in_place(|| Instance::start(&etcd.url(), "a", None));
    let applied = registry
        .wait_applied(a.revision, WITHIN)
        .await
        .expect("routers");
    assert!(applied.all_applied, "{applied:?}\n{}", sync.log());
    eventually("the left-over server deleted", WITHIN, || {
        haproxy.servers("notes") == vec![(a.id.clone(), 0)]
    })
    .await;
    let http = client();
    assert_eq!(get_version(&http, &haproxy).await, (200, "a".to_string()));

    // HAProxy restarts with its configuration only: the sync adds the
    // server again.
    haproxy.restart();
    eventually("the server added again", WITHIN, || {
        haproxy.servers("notes") == vec![(a.id.clone(), 0)]
    })
    .await;
    assert_eq!(get_version(&http, &haproxy).await, (200, "a".to_string()));
    let log = sync.log();
    assert!(
        log.contains("HAProxy is in step again") || log.contains("server added"),
        "{log}"
    );

    // A service with no backend in haproxy.cfg: logged, not routed, and the
    // sync still reports the revisions it applied.
    let mut ghost = InstanceRecord::new("ghost", "ghost-1");
    ghost.http = Some("127.0.0.1:1".into());
    let registration = registry
        .register(ghost, Duration::from_secs(5))
        .await
        .expect("registers");
    let applied = registry
        .wait_applied(registration.revision(), WITHIN)
        .await
        .expect("routers");
    assert!(applied.all_applied, "{applied:?}");
    eventually("the missing backend logged", WITHIN, || {
        sync.log().contains("HAProxy has no backend `ghost`")
    })
    .await;
    registration.deregister().await.expect("deregisters");
    sync.stop();
}
