//! `shimeji upgrade` against a real etcd and a real HAProxy kept by
//! `shimeji haproxy-sync`, each started per test: two instances of an HTTP
//! service rolled to a new version under load with no failed request and
//! every POST applied once, and the same through `shimeji gateway`; as the
//! negative control, the original MicroFlack sequence (stop without
//! deregistering) failing requests through HAProxy configured as the
//! original configured it; a bad version stopped by its error rate; and
//! `--abort`.
#![cfg(feature = "etcd")]

mod platform;

use platform::etcd::Etcd;
use platform::gateway::Gateway;
use platform::haproxy::{sample_config, Haproxy};
use platform::instance::{self, Instance};
use platform::load::{Load, Outcomes};
use platform::Sync;
use shimeji::registry::{InstanceRecord, Registry};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// Generous bound for anything a test waits for.
const WITHIN: Duration = Duration::from_secs(15);

/// Not a test: an instance of `notes` the tests start as a child process.
#[test]
#[ignore = "an instance of the notes service, started by the other tests in a process of its own"]
fn instance() {
    platform::instance::serve_from_env();
}

/// NEW_COMMAND: this test binary serving `notes` `version`, with `env`
/// (`NAME=value`) set.
fn new_command(registry: &str, version: &str, env: &[String]) -> Vec<String> {
    let mut command = vec![
        "env".to_string(),
        format!("{}={registry}", instance::REGISTRY_ENV),
        format!("{}={version}", instance::VERSION_ENV),
    ];
    command.extend(env.iter().cloned());
    command.push(
        std::env::current_exe()
            .expect("this test binary")
            .display()
            .to_string(),
    );
    command.extend(instance::instance_args().iter().map(|s| s.to_string()));
    command
}

/// `shimeji upgrade notes` with `args`, then `--` and `command`.
fn upgrade_command(args: &[&str], command: &[String]) -> Command {
    let mut upgrade = Command::new(env!("CARGO_BIN_EXE_shimeji"));
    upgrade
        .arg("upgrade")
        .arg("notes")
        .args(args)
        .arg("--")
        .args(command)
        .env_remove("RUST_LOG")
        .env_remove("REGISTRY")
        .stdin(Stdio::null());
    upgrade
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts that `lines` holds lines containing each of `expected`, in that
/// order.
fn assert_in_order(lines: &str, expected: &[String]) {
    let mut rest = lines.lines();
    for want in expected {
        assert!(
            rest.any(|line| line.contains(want.as_str())),
            "no line with `{want}` (in order) in:\n{lines}"
        );
    }
}

/// The instances of `notes` in the registry now.
async fn notes(registry: &Registry) -> Vec<InstanceRecord> {
    registry
        .snapshot()
        .await
        .expect("a snapshot")
        .instances
        .into_iter()
        .filter(|r| r.service == "notes")
        .collect()
}

/// SIGTERM to the processes of `records` (not children of this test:
/// `upgrade` started them), then waits until they are gone.
async fn stop_all(records: &[InstanceRecord]) {
    for record in records {
        let _ = Command::new("kill")
            .args(["-TERM", &record.pid.to_string()])
            .status();
    }
    let deadline = Instant::now() + WITHIN;
    for record in records {
        let stat = format!("/proc/{}/stat", record.pid);
        while std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z ")) {
            assert!(Instant::now() < deadline, "pid {} did not stop", record.pid);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The ids written down by every instance in `dir`, with their counts.
fn posted_ids(dir: &Path) -> BTreeMap<u64, u32> {
    let mut ids = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("the posts directory") {
        let text = std::fs::read_to_string(entry.expect("an entry").path()).expect("a posts file");
        for line in text.lines() {
            *ids.entry(line.trim().parse().expect("an id")).or_default() += 1;
        }
    }
    ids
}

/// What the clients go through: HAProxy kept by `haproxy-sync`, or the
/// gateway. Either reports the revision it applied as a router.
enum Front {
    Haproxy(Haproxy, Sync),
    Gateway(Gateway),
}

impl Front {
    /// HAProxy on `config`, kept in step with the registry.
    async fn haproxy(etcd: &Etcd, registry: &Registry, config: &Path) -> Front {
        let haproxy = Haproxy::start_with(config);
        let sync = Sync::start(&etcd.url(), registry, &haproxy, &[]).await;
        Front::Haproxy(haproxy, sync)
    }

    /// `shimeji gateway` following the registry.
    async fn gateway(etcd: &Etcd, registry: &Registry) -> Front {
        Front::Gateway(Gateway::start(&etcd.url(), registry).await)
    }

    fn url(&self) -> String {
        match self {
            Front::Haproxy(haproxy, _) => haproxy.url(""),
            Front::Gateway(gateway) => gateway.url(""),
        }
    }

    fn log(&self) -> String {
        match self {
            Front::Haproxy(haproxy, sync) => format!("{}\n{}", haproxy.log(), sync.log()),
            Front::Gateway(gateway) => gateway.log(),
        }
    }

    /// Stops the router process (its exit must be clean).
    fn stop(self) {
        match self {
            Front::Haproxy(_, sync) => drop(sync.stop()),
            Front::Gateway(gateway) => drop(gateway.stop()),
        }
    }
}

/// `GET /notes/version` through `front` `times` times: the versions that
/// answered, with their counts. Every answer must be a 2xx.
async fn versions_now(front: &Front, times: usize) -> BTreeMap<String, u64> {
    let client = platform::load::client();
    let mut versions = BTreeMap::new();
    for _ in 0..times {
        let response = client
            .get(format!("{}/notes/version", front.url()))
            .send()
            .await
            .expect("an answer");
        assert!(response.status().is_success(), "{}", response.status());
        let bytes = response.bytes().await.expect("a body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        let version = body["version"].as_str().unwrap_or("?").to_string();
        *versions.entry(version).or_default() += 1;
    }
    versions
}

/// Two instances of `notes` rolled from version 1 to 2 by `shimeji upgrade`
/// while 16 keep-alive clients send GETs and POSTs through `front` for
/// 20 s: no failed request, every POST applied exactly once.
async fn roll_under_load(etcd: Etcd, registry: Registry, front: Front) {
    let posts = instance::temp_dir("posts");
    let logs = instance::temp_dir("upgrade-logs");
    let mut old1 = block_in_place(|| Instance::start(&etcd.url(), "1", Some(&posts)));
    let mut old2 = block_in_place(|| Instance::start(&etcd.url(), "1", Some(&posts)));
    for revision in [old1.revision, old2.revision] {
        let applied = registry
            .wait_applied(revision, WITHIN)
            .await
            .expect("routers");
        assert!(applied.all_applied, "{applied:?}");
    }

    // 16 keep-alive clients, GETs and POSTs, for 20 s; the roll starts
    // after 2 s.
    let started = Instant::now();
    let load = Load::start(&front.url(), 16, true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let command = new_command(
        &etcd.url(),
        "2",
        &[format!("{}={}", instance::POSTS_ENV, posts.display())],
    );
    let log_dir = logs.display().to_string();
    let url = etcd.url();
    let args = [
        "--registry",
        &url,
        "--log-dir",
        &log_dir,
        "--grace",
        "10",
        "--soak",
        "1",
        "--max-error-rate",
        "0",
    ];
    let output = block_in_place(|| {
        upgrade_command(&args, &command)
            .output()
            .expect("run shimeji upgrade")
    });
    let rolled_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(started.elapsed())).await;
    let outcomes = load.stop().await;
    let described = describe(&output);
    assert!(output.status.success(), "{described}\n{}", front.log());

    // Every step, in order, for each old instance (oldest first).
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}");
    let mut expected = vec!["upgrading notes: 2 instance(s)".to_string()];
    for (step, old) in [("[1/2]", &old1), ("[2/2]", &old2)] {
        expected.extend([
            format!("{step} started pid"),
            format!("{step} new instance"),
            format!("{step} ready: http://"),
            format!("{step} applied by every router (1)"),
            format!("{step} soaking for 1s"),
            format!("{step} soak over:"),
            format!(
                "{step} old instance {} (pid {}): SIGTERM sent",
                old.id,
                old.child.id()
            ),
            format!(
                "{step} old instance {} (pid {}): exited after",
                old.id,
                old.child.id()
            ),
            format!(
                "{step} old instance {} (pid {}): stopped and deregistered",
                old.id,
                old.child.id()
            ),
        ]);
    }
    expected.push("upgrade of notes done: 2 instance(s) replaced".into());
    assert_in_order(&stdout, &expected);
    assert!(
        !stdout.contains("error(s), error rate") || stdout.contains(" 0 error(s)"),
        "{stdout}"
    );

    // The old instances stopped in order: deregistered, every router
    // applied it, then closed.
    for old in [&mut old1, &mut old2] {
        let status = old.child.wait().expect("the old instance exited");
        assert!(status.success(), "{status}");
        let said = old.wait_for("deregistered", Duration::from_secs(1));
        assert!(
            said.starts_with("deregistered; every router applied it") && said.contains("routers=1"),
            "{said}"
        );
    }

    // Two instances of the new version run, and only they answer.
    let new = notes(&registry).await;
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new.iter().all(|r| r.version == "2"), "{new:?}");
    if let Front::Haproxy(haproxy, _) = &front {
        let mut names: Vec<String> = new.iter().map(|r| r.instance_id.clone()).collect();
        names.sort();
        platform::eventually("HAProxy has the new servers only", WITHIN, || {
            let mut servers: Vec<String> = haproxy
                .servers("notes")
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            servers.sort();
            servers == names
        })
        .await;
    }
    let after = versions_now(&front, 20).await;
    assert_eq!(after.keys().collect::<Vec<_>>(), ["2"], "{after:?}");

    // Nothing failed, both versions answered, every POST applied once.
    assert!(
        outcomes.errors.is_empty() && outcomes.non_2xx.is_empty(),
        "errors {:?}\nnon-2xx {:?}\n{described}",
        outcomes.errors,
        outcomes.non_2xx
    );
    assert!(
        outcomes.versions.get("1").is_some_and(|n| *n > 0),
        "{:?}",
        outcomes.versions
    );
    assert!(
        outcomes.versions.get("2").is_some_and(|n| *n > 0),
        "{:?}",
        outcomes.versions
    );
    let applied = posted_ids(&posts);
    let twice: Vec<_> = applied.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "POSTs applied more than once: {twice:?}");
    let mut acknowledged = outcomes.posted.clone();
    acknowledged.sort_unstable();
    let written: Vec<u64> = applied.keys().copied().collect();
    assert_eq!(
        written, acknowledged,
        "every acknowledged POST applied, and no other"
    );
    println!(
        "roll took {rolled_in:?}; {} GETs {:?}, {} POSTs, 0 failed",
        outcomes.versions.values().sum::<u64>(),
        outcomes.versions,
        outcomes.posted.len()
    );
    let state = std::fs::read_to_string(logs.join("notes.upgrade.json")).expect("the state file");
    assert!(state.contains("\"status\": \"done\""), "{state}");

    stop_all(&new).await;
    front.stop();
    let _ = std::fs::remove_dir_all(&posts);
    let _ = std::fs::remove_dir_all(&logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolls_two_instances_under_load_with_no_failed_request() {
    let etcd = Etcd::start();
    let registry = Registry::connect(&etcd.url()).await.expect("etcd");
    let front = Front::haproxy(&etcd, &registry, &sample_config()).await;
    roll_under_load(etcd, registry, front).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolls_two_instances_under_load_through_the_gateway_with_no_failed_request() {
    let etcd = Etcd::start();
    let registry = Registry::connect(&etcd.url()).await.expect("etcd");
    let front = Front::gateway(&etcd, &registry).await;
    roll_under_load(etcd, registry, front).await;
}

/// The negative control: the original MicroFlack's upgrade sequence (start
/// a new instance, sleep a fixed time, stop the old one at once without
/// deregistering it: its record stays until its lease expires) with the
/// same clients. Returns what they saw.
async fn original_sequence(etcd: &Etcd, registry: &Registry, front: &Front) -> Outcomes {
    let posts = instance::temp_dir("posts");
    let old = [
        block_in_place(|| Instance::start(&etcd.url(), "1", Some(&posts))),
        block_in_place(|| Instance::start(&etcd.url(), "1", Some(&posts))),
    ];
    for instance in &old {
        let applied = registry
            .wait_applied(instance.revision, WITHIN)
            .await
            .expect("routers");
        assert!(applied.all_applied, "{applied:?}");
    }
    let load = Load::start(&front.url(), 16, true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut new = Vec::new();
    for mut instance in old {
        new.push(block_in_place(|| {
            Instance::start(&etcd.url(), "2", Some(&posts))
        }));
        // The original sleeps 15 s; what matters is that it does not wait
        // for anything.
        tokio::time::sleep(Duration::from_secs(1)).await;
        // `docker stop` of a process that exits at once on SIGTERM, and no
        // deregistration.
        instance.child.kill().expect("kill the old instance");
        let _ = instance.child.wait();
    }
    // Past the old records' lease (3 s) and the time a router needs to see
    // them expire.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let outcomes = load.stop().await;
    drop(new);
    let _ = std::fs::remove_dir_all(&posts);
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_upgrade_sequence_fails_requests_through_the_original_haproxy() {
    let etcd = Etcd::start();
    let registry = Registry::connect(&etcd.url()).await.expect("etcd");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/platform/haproxy-original.cfg");
    let front = Front::haproxy(&etcd, &registry, &config).await;
    let outcomes = original_sequence(&etcd, &registry, &front).await;
    let failed = outcomes.errors.len() + outcomes.non_2xx.len();
    let statuses: BTreeMap<u16, usize> =
        outcomes
            .non_2xx
            .iter()
            .fold(BTreeMap::new(), |mut counts, (status, _)| {
                *counts.entry(*status).or_default() += 1;
                counts
            });
    println!(
        "original sequence through HAProxy as the original configured it: {} ok, {failed} failed: {statuses:?}, {} socket errors",
        outcomes.ok(),
        outcomes.errors.len()
    );
    assert!(outcomes.ok() > 0, "the load ran");
    assert!(
        statuses.keys().any(|s| *s == 502 || *s == 503),
        "refused connections and broken ones reach the clients as 503 and 502: \
         statuses {statuses:?}, errors {:?}",
        outcomes.errors
    );
    front.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_with_errors_is_stopped_and_the_old_one_kept() {
    let etcd = Etcd::start();
    let haproxy = Haproxy::start();
    let registry = Registry::connect(&etcd.url()).await.expect("etcd");
    let sync = Sync::start(&etcd.url(), &registry, &haproxy, &[]).await;
    let logs = instance::temp_dir("upgrade-logs");
    let old = block_in_place(|| Instance::start(&etcd.url(), "1", None));
    let applied = registry
        .wait_applied(old.revision, WITHIN)
        .await
        .expect("routers");
    assert!(applied.all_applied);

    let load = Load::start(&haproxy.url(""), 2, false);
    let command = new_command(&etcd.url(), "2", &[format!("{}=1", instance::BROKEN_ENV)]);
    let (url, log_dir) = (etcd.url(), logs.display().to_string());
    let args = [
        "--registry",
        &url,
        "--log-dir",
        &log_dir,
        "--grace",
        "10",
        "--soak",
        "2",
        "--max-error-rate",
        "0.05",
    ];
    let output = block_in_place(|| {
        upgrade_command(&args, &command)
            .output()
            .expect("run upgrade")
    });
    let outcomes = load.stop().await;
    let described = describe(&output);
    assert_eq!(output.status.code(), Some(1), "{described}");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_in_order(
        &stdout,
        &[
            "[1/1] started pid".into(),
            "[1/1] applied by every router (1)".into(),
            "[1/1] soak over:".into(),
            "[1/1] failed: error rate".into(),
            "[1/1] new instance".into(),
            "stopped and deregistered".into(),
        ],
    );
    assert!(!stdout.contains("old instance"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("above --max-error-rate 5.00%"), "{stderr}");
    assert!(stderr.contains("0 of 1 instance(s) replaced"), "{stderr}");

    // The old instance was never touched; the broken one is gone.
    let left = notes(&registry).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].instance_id, old.id);
    assert!(outcomes.errors.is_empty(), "{:?}", outcomes.errors);
    assert!(
        outcomes.non_2xx.iter().all(|(s, _)| *s == 500),
        "{:?}",
        outcomes.non_2xx
    );
    let state = std::fs::read_to_string(logs.join("notes.upgrade.json")).expect("state");
    assert!(state.contains("\"status\": \"failed\""), "{state}");
    sync.stop();
    let _ = std::fs::remove_dir_all(&logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_stops_the_new_instances_and_keeps_the_old_ones() {
    let etcd = Etcd::start();
    let haproxy = Haproxy::start();
    let registry = Registry::connect(&etcd.url()).await.expect("etcd");
    let sync = Sync::start(&etcd.url(), &registry, &haproxy, &[]).await;
    let logs = instance::temp_dir("upgrade-logs");
    let old1 = block_in_place(|| Instance::start(&etcd.url(), "1", None));
    let old2 = block_in_place(|| Instance::start(&etcd.url(), "1", None));
    let (url, log_dir) = (etcd.url(), logs.display().to_string());

    // A roll with a long soak, stopped while the first new instance soaks.
    let command = new_command(&url, "2", &[]);
    let args = ["--registry", &url, "--log-dir", &log_dir, "--soak", "60"];
    let mut rolling = upgrade_command(&args, &command)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start shimeji upgrade");
    let stdout = rolling.stdout.take().expect("its stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    block_in_place(|| loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("upgrade ended early: {seen:?}"))
            .expect("a line");
        seen.push(line.clone());
        if line.starts_with("[1/2] soaking for") {
            break;
        }
    });
    let running = notes(&registry).await;
    let new: Vec<&InstanceRecord> = running.iter().filter(|r| r.version == "2").collect();
    assert_eq!(new.len(), 1, "{running:?}");

    let abort = [
        "--registry",
        &url,
        "--log-dir",
        &log_dir,
        "--abort",
        "--grace",
        "10",
    ];
    let output = block_in_place(|| {
        let mut abort = upgrade_command(&abort, &[]);
        abort.output().expect("run upgrade --abort")
    });
    let described = describe(&output);
    assert!(output.status.success(), "{described}");
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    let label = format!("new instance {} (pid {})", new[0].instance_id, new[0].pid);
    assert_in_order(
        &said,
        &[
            "stopping the running upgrade (pid".into(),
            "aborting the upgrade of notes: 1 instance(s) it started still run".into(),
            format!("[1/1] {label}: SIGTERM sent"),
            format!("[1/1] {label}: exited after"),
            format!("[1/1] {label}: stopped and deregistered"),
            "upgrade of notes aborted: 1 new instance(s) stopped".into(),
        ],
    );
    let status = block_in_place(|| rolling.wait()).expect("the roll ended");
    assert!(!status.success(), "the roll was stopped: {status}");

    // The old instances run on, untouched; the new one is gone.
    let mut left: Vec<String> = notes(&registry)
        .await
        .into_iter()
        .map(|r| r.instance_id)
        .collect();
    left.sort();
    let mut olds = vec![old1.id.clone(), old2.id.clone()];
    olds.sort();
    assert_eq!(left, olds);
    let state = std::fs::read_to_string(logs.join("notes.upgrade.json")).expect("state");
    assert!(state.contains("\"status\": \"aborted\""), "{state}");

    // Nothing left to abort; and an upgrade of a service with no instance
    // here is refused.
    let again = block_in_place(|| upgrade_command(&abort, &[]).output().expect("abort again"));
    assert!(again.status.success(), "{}", describe(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 instance(s) it started still run"));
    let nothing = block_in_place(|| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shimeji"));
        command
            .args([
                "upgrade",
                "nobody",
                "--registry",
                &url,
                "--log-dir",
                &log_dir,
                "--",
                "true",
            ])
            .output()
            .expect("run upgrade")
    });
    assert_eq!(nothing.status.code(), Some(2), "{}", describe(&nothing));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("no running instance of nobody"));
    sync.stop();
    drop((old1, old2));
    let _ = std::fs::remove_dir_all(&logs);
}
