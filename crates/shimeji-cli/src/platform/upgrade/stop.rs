//! Stopping one instance gracefully: SIGTERM (a shimeji instance then
//! deregisters, waits for the routers, drains and exits), wait until the
//! process is gone and its record too, SIGKILL after the grace period.

use std::time::{Duration, Instant};

use shimeji::registry::Watcher;

use super::process::ProcessId;

/// How long a record may outlive its process before `stop` gives up
/// waiting for it (a process that exited without deregistering: its
/// record goes when its lease expires).
const RECORD_AFTER_EXIT: Duration = Duration::from_secs(15);
/// How long a process may take to die after SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(5);
/// How often the process is looked at.
const POLL: Duration = Duration::from_millis(20);

/// An instance to stop.
pub struct Target<'a> {
    /// Its service.
    pub service: &'a str,
    /// Its instance id, when it registered.
    pub instance_id: Option<&'a str>,
    /// Its process.
    pub process: ProcessId,
    /// How the progress lines name it.
    pub label: String,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// It had to be killed.
    pub killed: bool,
    /// Its record was still there when the wait ended.
    pub record_left: bool,
}

/// Stops `target`, printing each step after `prefix`.
pub async fn stop(
    watcher: &mut Watcher,
    target: &Target<'_>,
    grace: Duration,
    prefix: &str,
) -> Result<Outcome, String> {
    let label = &target.label;
    let started = Instant::now();
    match target.process.signal(libc::SIGTERM) {
        Ok(true) => println!("{prefix} {label}: SIGTERM sent"),
        Ok(false) => println!("{prefix} {label}: not running"),
        Err(e) => return Err(format!("cannot signal {label}: {e}")),
    }
    let mut outcome = Outcome {
        killed: false,
        record_left: false,
    };
    let mut exited_at: Option<Instant> = None;
    loop {
        let alive = target.process.is_alive();
        let registered = target
            .instance_id
            .is_some_and(|id| watcher.table().get(target.service, id).is_some());
        if !alive && exited_at.is_none() {
            exited_at = Some(Instant::now());
            println!(
                "{prefix} {label}: exited after {:.2}s",
                started.elapsed().as_secs_f64()
            );
        }
        match exited_at {
            Some(_) if !registered => break,
            Some(at) if at.elapsed() >= RECORD_AFTER_EXIT => {
                println!(
                    "{prefix} {label}: its record is still registered {}s after it exited; \
                     it goes when its lease expires",
                    RECORD_AFTER_EXIT.as_secs()
                );
                outcome.record_left = true;
                break;
            }
            _ => {}
        }
        if alive && !outcome.killed && started.elapsed() >= grace {
            println!(
                "{prefix} {label}: still running after {}s: SIGKILL",
                grace.as_secs_f64()
            );
            target
                .process
                .signal(libc::SIGKILL)
                .map_err(|e| format!("cannot kill {label}: {e}"))?;
            outcome.killed = true;
        }
        if alive && outcome.killed && started.elapsed() >= grace + AFTER_KILL {
            return Err(format!("{label} still runs after SIGKILL"));
        }
        tokio::time::sleep(POLL).await;
    }
    if !outcome.record_left {
        println!(
            "{prefix} {label}: stopped{} and deregistered ({:.2}s)",
            if outcome.killed { " (killed)" } else { "" },
            started.elapsed().as_secs_f64()
        );
    }
    Ok(outcome)
}
