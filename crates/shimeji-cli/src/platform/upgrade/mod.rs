//! `shimeji upgrade SERVICE -- NEW_COMMAND…`: replaces the instances of a
//! service running on this host, one at a time, never running fewer than
//! before. For each old instance:
//!
//! 1. start NEW_COMMAND detached, its output in a log file;
//! 2. wait until a new instance of the service registers: a new instance
//!    id whose pid is the started process or runs under it (else, after
//!    a short wait, any new instance id);
//! 3. wait until it is ready (`GET /health/ready` at its HTTP address
//!    answers 200; an address that answers 404 serves no such endpoint,
//!    and then registration stands for readiness, since instances register
//!    once ready) and until every router (gateway, haproxy-sync) has
//!    applied the revision of its registration;
//! 4. optionally soak: it must keep running and registered for `--soak`
//!    seconds, and with `--max-error-rate` its error rate over the soak
//!    (from `shimeji_entrypoint_calls_total` of its `/metrics`, every
//!    outcome but `ok` counted as an error) must not exceed it;
//! 5. SIGTERM one old instance (found in the registry by host and pid),
//!    wait until it exited and its record is gone; SIGKILL after `--grace`.
//!
//! A new instance that fails a step is stopped the same graceful way and
//! the roll ends (exit 1), the old instances not yet replaced still
//! running. `--abort` stops the instances an upgrade started, listed in its
//! state file `<log dir>/<service>.upgrade.json`.

mod abort;
mod probe;
mod process;
mod state;
mod stop;

pub use abort::abort;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shimeji::registry::{host_name, InstanceRecord, Registry, Revision, Watcher};

use process::ProcessId;
use state::{Started, Status, Stopped, UpgradeState};
use stop::Target;

/// How an upgrade runs.
#[derive(Debug, Clone)]
pub struct UpgradeOptions {
    /// The service.
    pub service: String,
    /// The command that starts one new instance.
    pub command: Vec<String>,
    /// Set in its environment: `REGISTRY`, so that it registers where the
    /// upgrade looks for it (the command may still set its own).
    pub environment: Vec<(String, String)>,
    /// How long a new instance is watched before an old one stops.
    pub soak: Duration,
    /// Highest error rate (0 to 1) allowed over the soak.
    pub max_error_rate: Option<f64>,
    /// How long an instance may take to stop after SIGTERM.
    pub grace: Duration,
    /// Where logs and the state file go.
    pub log_dir: PathBuf,
    /// How long a new instance may take to register and be ready.
    pub ready_timeout: Duration,
    /// How long the routers may take to apply a registration.
    pub applied_timeout: Duration,
}

/// Why an upgrade did not complete; each kind has its exit status.
#[derive(Debug)]
pub enum UpgradeError {
    /// Nothing to do, or it cannot start (exit 2).
    Usage(String),
    /// The registry cannot be reached (exit 3).
    Registry(String),
    /// A step failed (exit 1).
    Failed(String),
}

/// How long to wait for the registry's first table.
const REGISTRY_WITHIN: Duration = Duration::from_secs(10);
/// How long a new instance id that is not under the started process waits
/// for one that is, before it is taken.
const PID_MATCH_GRACE: Duration = Duration::from_secs(2);
/// How often a waiting step looks again.
const POLL: Duration = Duration::from_millis(50);

/// The registry at `url`, and a watcher that has read it.
async fn follow(url: &str) -> Result<(Registry, Watcher), UpgradeError> {
    let registry = super::connect(url).await.map_err(|(code, message)| {
        if code == shimeji::cli::EXIT_USAGE {
            UpgradeError::Usage(message)
        } else {
            UpgradeError::Registry(message)
        }
    })?;
    let mut watcher = registry.watcher();
    tokio::time::timeout(
        REGISTRY_WITHIN,
        watcher.wait_until(|t| t.lists > 0 && t.connected),
    )
    .await
    .map_err(|_| {
        UpgradeError::Registry(format!(
            "the registry did not answer within {}s",
            REGISTRY_WITHIN.as_secs()
        ))
    })?;
    Ok((registry, watcher))
}

/// An old instance to replace.
struct Old {
    record: InstanceRecord,
    process: ProcessId,
}

/// Runs the upgrade `options` describes against the registry at `url`.
pub async fn roll(url: &str, options: UpgradeOptions) -> Result<(), UpgradeError> {
    let service = options.service.as_str();
    std::fs::create_dir_all(&options.log_dir).map_err(|e| {
        UpgradeError::Usage(format!("cannot create {}: {e}", options.log_dir.display()))
    })?;
    let state_path = state::path(&options.log_dir, service);
    if let Some(previous) = UpgradeState::load(&state_path).map_err(UpgradeError::Usage)? {
        if previous.is_running() {
            return Err(UpgradeError::Usage(format!(
                "an upgrade of {service} is running (pid {}); see {}",
                previous.upgrader.pid,
                state_path.display()
            )));
        }
    }
    let (registry, mut watcher) = follow(url).await?;
    let host = host_name();
    let table = watcher.table();
    let mut known: HashSet<String> = table
        .instances_of(service)
        .map(|r| r.instance_id.clone())
        .collect();
    let mut olds = Vec::new();
    for record in table.instances_of(service) {
        if record.host != host {
            println!(
                "skipping instance {} on host {} (run the upgrade there)",
                record.instance_id, record.host
            );
            continue;
        }
        match ProcessId::of(record.pid) {
            Some(process) if started_before(&process, record) => olds.push(Old {
                record: record.clone(),
                process,
            }),
            _ => println!(
                "skipping instance {}: no process {} of it runs here (its record goes when its lease expires)",
                record.instance_id, record.pid
            ),
        }
    }
    olds.sort_by_key(|o| o.record.started_at_ms);
    if olds.is_empty() {
        return Err(UpgradeError::Usage(format!(
            "no running instance of {service} on this host ({host}) in the registry"
        )));
    }
    let upgrader = ProcessId::of(std::process::id())
        .ok_or_else(|| UpgradeError::Failed("cannot read this process in /proc".into()))?;
    let mut state = UpgradeState {
        service: service.to_string(),
        command: options.command.clone(),
        upgrader,
        status: Status::Running,
        started: Vec::new(),
        stopped: Vec::new(),
    };
    state.save(&state_path).map_err(UpgradeError::Failed)?;
    println!(
        "upgrading {service}: {} instance(s) on {host}, one at a time, to `{}`",
        olds.len(),
        options.command.join(" ")
    );
    let client = probe::client().map_err(UpgradeError::Failed)?;
    let count = olds.len();
    for (index, old) in olds.iter().enumerate() {
        let step = format!("[{}/{count}]", index + 1);
        let result = replace(
            &registry,
            &mut watcher,
            &client,
            &options,
            &mut state,
            &state_path,
            &mut known,
            old,
            &step,
        )
        .await;
        if let Err(message) = result {
            state.status = Status::Failed;
            let _ = state.save(&state_path);
            let started = state
                .started
                .iter()
                .filter(|s| s.target().is_alive())
                .count();
            let mut text = format!(
                "{step} {message}; upgrade of {service} stopped: {} of {count} instance(s) replaced",
                state.stopped.len()
            );
            if started > 0 {
                text.push_str(&format!(
                    "; `shimeji upgrade {service} --abort` stops the {started} new instance(s) it started"
                ));
            }
            return Err(UpgradeError::Failed(text));
        }
    }
    state.status = Status::Done;
    state.save(&state_path).map_err(UpgradeError::Failed)?;
    println!("upgrade of {service} done: {count} instance(s) replaced");
    Ok(())
}

/// Whether `process` started before `record` was written (else its pid was
/// reused by another process since).
fn started_before(process: &ProcessId, record: &InstanceRecord) -> bool {
    match process.started_at_ms() {
        // Clock ticks are coarse: a second of slack.
        Some(started) if record.started_at_ms > 0 => started <= record.started_at_ms + 1000,
        _ => true,
    }
}

/// Replaces one old instance; the error says which step failed. A new
/// instance that fails is stopped before this returns.
#[allow(clippy::too_many_arguments)]
async fn replace(
    registry: &Registry,
    watcher: &mut Watcher,
    client: &reqwest::Client,
    options: &UpgradeOptions,
    state: &mut UpgradeState,
    state_path: &std::path::Path,
    known: &mut HashSet<String>,
    old: &Old,
    step: &str,
) -> Result<(), String> {
    let service = options.service.as_str();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let log = options
        .log_dir
        .join(format!("{service}-{stamp}-{}.log", state.started.len() + 1));
    let mut child = process::spawn_detached(&options.command, &options.environment, &log)
        .map_err(|e| format!("cannot start `{}`: {e}", options.command.join(" ")))?;
    let pid = child.id().ok_or("the new process exited at once")?;
    let started = ProcessId::of(pid).ok_or("the new process exited at once")?;
    println!("{step} started pid {pid}, output in {}", log.display());
    state.started.push(Started {
        process: started,
        instance: None,
        log: log.clone(),
    });
    state.save(state_path)?;

    let checked = async {
        let deadline = Instant::now() + options.ready_timeout;
        let record = wait_registered(watcher, service, known, pid, &mut child, deadline).await?;
        known.insert(record.instance_id.clone());
        let process = ProcessId::of(record.pid).unwrap_or(started);
        if let Some(last) = state.started.last_mut() {
            last.instance = Some((record.instance_id.clone(), process));
        }
        state.save(state_path)?;
        let revision = registration_revision(registry, &record, watcher.table().revision).await;
        println!(
            "{step} new instance {} registered (pid {}, http {}, revision {revision})",
            record.instance_id,
            record.pid,
            record.http.as_deref().unwrap_or("none")
        );
        if let Some(probed) = probed_address(&record) {
            wait_ready(client, probed, process, deadline, step).await?;
        }
        let applied = registry
            .wait_applied(revision, options.applied_timeout)
            .await
            .map_err(|e| format!("cannot read the routers: {e}"))?;
        if applied.routers == 0 {
            println!("{step} no router reports to the registry: nothing to wait for");
        } else if applied.all_applied {
            println!(
                "{step} applied by every router ({}) at revision {revision}",
                applied.routers
            );
        } else {
            let behind: Vec<String> = applied
                .behind
                .iter()
                .map(|r| format!("{} at {}", r.id, r.applied_revision))
                .collect();
            return Err(format!(
                "routers did not apply revision {revision} within {}s: {}",
                options.applied_timeout.as_secs(),
                behind.join(", ")
            ));
        }
        if !options.soak.is_zero() {
            soak(watcher, client, options, &record, process, step).await?;
        }
        Ok::<_, String>(())
    }
    .await;

    if let Err(message) = checked {
        println!("{step} failed: {message}; stopping the new instance");
        if let Some(entry) = state.started.last().cloned() {
            let id = entry.instance.as_ref().map(|(id, _)| id.as_str());
            let target = Target {
                service,
                instance_id: id,
                process: entry.target(),
                label: format!(
                    "new instance {} (pid {})",
                    id.unwrap_or("(not registered)"),
                    entry.target().pid
                ),
            };
            if let Err(e) = stop::stop(watcher, &target, options.grace, step).await {
                println!("{step} {e}");
            }
        }
        return Err(message);
    }

    let target = Target {
        service,
        instance_id: Some(&old.record.instance_id),
        process: old.process,
        label: format!(
            "old instance {} (pid {})",
            old.record.instance_id, old.record.pid
        ),
    };
    let outcome = stop::stop(watcher, &target, options.grace, step).await?;
    state.stopped.push(Stopped {
        instance_id: old.record.instance_id.clone(),
        pid: old.record.pid,
        killed: outcome.killed,
    });
    state.save(state_path)?;
    Ok(())
}

/// Waits for the new instance of `service`: a record with an id not in
/// `known`, whose pid is `pid` or runs under it; else, once one has waited
/// [`PID_MATCH_GRACE`], any new id.
async fn wait_registered(
    watcher: &mut Watcher,
    service: &str,
    known: &HashSet<String>,
    pid: u32,
    child: &mut tokio::process::Child,
    deadline: Instant,
) -> Result<InstanceRecord, String> {
    let host = host_name();
    let mut other: Option<(InstanceRecord, Instant)> = None;
    loop {
        let table = watcher.table();
        for record in table
            .instances_of(service)
            .filter(|r| !known.contains(&r.instance_id))
        {
            if record.host == host && process::is_same_or_descendant(record.pid, pid) {
                return Ok(record.clone());
            }
            if other.is_none() {
                other = Some((record.clone(), Instant::now()));
            }
        }
        if let Some((record, since)) = &other {
            if since.elapsed() >= PID_MATCH_GRACE {
                println!(
                    "  new instance {} (host {}, pid {}) does not run under pid {pid}: taken as the new instance by its new id",
                    record.instance_id, record.host, record.pid
                );
                return Ok(record.clone());
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(format!(
                    "the new process exited ({status}) before a new instance registered"
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot watch the new process: {e}")),
        }
        if Instant::now() >= deadline {
            return Err("no new instance registered in time (see its log)".into());
        }
        let _ = tokio::time::timeout(POLL, watcher.changed()).await;
    }
}

/// The revision that wrote `record`'s key (the barrier routers must reach
/// to route to it); `fallback` (the table's revision, never lower) when it
/// cannot be read.
async fn registration_revision(
    registry: &Registry,
    record: &InstanceRecord,
    fallback: Revision,
) -> Revision {
    let key = record.key();
    match registry.backend().list(key.clone()).await {
        Ok((kvs, _)) => kvs
            .iter()
            .find(|kv| kv.key == key)
            .map_or(fallback, |kv| kv.mod_revision),
        Err(_) => fallback,
    }
}

/// Where an instance answers `/health/ready` and `/metrics`: its operations
/// server (`METRICS_ADDRESS`) when it runs one, else its HTTP address.
fn probed_address(record: &InstanceRecord) -> Option<&str> {
    record.ops.as_deref().or(record.http.as_deref())
}

/// Waits until `http://<http>/health/ready` answers 200 (or 404: no such
/// endpoint there).
async fn wait_ready(
    client: &reqwest::Client,
    http: &str,
    process: ProcessId,
    deadline: Instant,
    step: &str,
) -> Result<(), String> {
    loop {
        match probe::readiness(client, http).await {
            probe::Readiness::Ready => {
                println!("{step} ready: http://{http}/health/ready answers 200");
                return Ok(());
            }
            probe::Readiness::NoEndpoint => {
                println!(
                    "{step} http://{http}/health/ready answers 404: registered instances are ready"
                );
                return Ok(());
            }
            probe::Readiness::NotReady(why) => {
                if !process.is_alive() {
                    return Err("the new instance exited before it was ready".into());
                }
                if Instant::now() >= deadline {
                    return Err(format!("not ready in time: /health/ready {why}"));
                }
            }
        }
        tokio::time::sleep(POLL * 2).await;
    }
}

/// Watches the new instance for `--soak`: it must keep running and
/// registered; with `--max-error-rate`, its error rate over the soak must
/// stay within it.
async fn soak(
    watcher: &mut Watcher,
    client: &reqwest::Client,
    options: &UpgradeOptions,
    record: &InstanceRecord,
    process: ProcessId,
    step: &str,
) -> Result<(), String> {
    let service = options.service.as_str();
    let metrics = |when: &'static str| async move {
        let Some(probed) = probed_address(record) else {
            return Ok(None);
        };
        probe::calls(client, probed, service)
            .await
            .map_err(|e| format!("cannot read its metrics {when} the soak: {e}"))
    };
    let before = metrics("before").await;
    if options.max_error_rate.is_some() {
        match &before {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(format!(
                    "--max-error-rate asks for its error rate, but {} serves no /metrics",
                    probed_address(record).unwrap_or("an instance with no HTTP address")
                ))
            }
            Err(e) => return Err(e.clone()),
        }
    }
    println!("{step} soaking for {}s", options.soak.as_secs_f64());
    let end = Instant::now() + options.soak;
    while Instant::now() < end {
        if !process.is_alive() {
            return Err("the new instance exited during the soak".into());
        }
        if watcher.table().get(service, &record.instance_id).is_none() {
            return Err("the new instance deregistered during the soak".into());
        }
        tokio::time::sleep(POLL.min(end.saturating_duration_since(Instant::now()))).await;
    }
    let (Ok(Some(before)), Ok(Some(after))) = (before, metrics("after").await) else {
        if options.max_error_rate.is_some() {
            return Err("cannot read its metrics after the soak".into());
        }
        println!("{step} soak over: still running and registered");
        return Ok(());
    };
    let calls = before.since(&after);
    match calls.error_rate() {
        None => println!("{step} soak over: no call counted in its /metrics, so no error rate"),
        Some(rate) => {
            println!(
                "{step} soak over: {} call(s), {} error(s), error rate {:.2}%",
                calls.total,
                calls.errors,
                rate * 100.0
            );
            if let Some(max) = options.max_error_rate {
                if rate > max {
                    return Err(format!(
                        "error rate {:.2}% is above --max-error-rate {:.2}%",
                        rate * 100.0,
                        max * 100.0
                    ));
                }
            }
        }
    }
    Ok(())
}
