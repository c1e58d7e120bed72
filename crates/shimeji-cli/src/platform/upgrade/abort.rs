//! `shimeji upgrade SERVICE --abort`: stops the instances the last upgrade
//! of the service started, listed in its state file, the same graceful way
//! as the roll stops the old ones.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::state::{self, Started, Status, UpgradeState};
use super::stop::{self, Target};
use super::{follow, UpgradeError, POLL};

/// `--abort`: stops the instances the last upgrade of `service` started
/// (and that still run), the same graceful way. Without `force`, refuses
/// to stop one when no other instance of the service would be left.
pub async fn abort(
    url: &str,
    service: &str,
    log_dir: &std::path::Path,
    grace: Duration,
    force: bool,
) -> Result<(), UpgradeError> {
    let state_path = state::path(log_dir, service);
    let mut state = UpgradeState::load(&state_path)
        .map_err(UpgradeError::Usage)?
        .ok_or_else(|| {
            UpgradeError::Usage(format!(
                "no upgrade of {service} to abort: {} does not exist",
                state_path.display()
            ))
        })?;
    if state.is_running() {
        // Stop the roll first, so it starts nothing more.
        println!("stopping the running upgrade (pid {})", state.upgrader.pid);
        let _ = state.upgrader.signal(libc::SIGTERM);
        let until = Instant::now() + Duration::from_secs(5);
        while state.upgrader.is_alive() && Instant::now() < until {
            tokio::time::sleep(POLL).await;
        }
    }
    let (_registry, mut watcher) = follow(url).await?;
    let running: Vec<Started> = state
        .started
        .iter()
        .filter(|s| s.target().is_alive())
        .cloned()
        .collect();
    println!(
        "aborting the upgrade of {service}: {} instance(s) it started still run",
        running.len()
    );
    let stopping: HashSet<&str> = running
        .iter()
        .filter_map(|s| s.instance.as_ref().map(|(id, _)| id.as_str()))
        .collect();
    let left = watcher
        .table()
        .instances_of(service)
        .filter(|r| !stopping.contains(r.instance_id.as_str()))
        .count();
    if left == 0 && !stopping.is_empty() && !force {
        return Err(UpgradeError::Failed(format!(
            "not stopping the new instances: no other instance of {service} would be left \
             (--force stops them anyway)"
        )));
    }
    let count = running.len();
    for (index, started) in running.iter().enumerate() {
        let step = format!("[{}/{count}]", index + 1);
        let id = started.instance.as_ref().map(|(id, _)| id.as_str());
        let target = Target {
            service,
            instance_id: id,
            process: started.target(),
            label: format!(
                "new instance {} (pid {})",
                id.unwrap_or("(not registered)"),
                started.target().pid
            ),
        };
        stop::stop(&mut watcher, &target, grace, &step)
            .await
            .map_err(UpgradeError::Failed)?;
    }
    state.status = Status::Aborted;
    state.save(&state_path).map_err(UpgradeError::Failed)?;
    println!("upgrade of {service} aborted: {count} new instance(s) stopped");
    Ok(())
}
