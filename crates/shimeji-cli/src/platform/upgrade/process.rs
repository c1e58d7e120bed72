//! Processes of this host, as `upgrade` sees them: started detached with
//! their output in a log file, found in `/proc`, signalled by pid, told
//! apart from a later process that reused their pid by their start time.

use std::path::Path;
use std::process::Stdio;

/// A process of this host: its pid and its start time (clock ticks after
/// boot, from `/proc/<pid>/stat`), which a later process reusing the pid
/// does not share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessId {
    /// Its pid.
    pub pid: u32,
    /// When it started, in clock ticks after boot.
    pub start_ticks: u64,
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    state: char,
    ppid: u32,
    start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process.
fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses a `/proc/<pid>/stat` line: `pid (comm) state ppid … starttime …`;
/// the command name may hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        // Field 22 of the line; the 20th after the command name.
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

impl ProcessId {
    /// Process `pid` as it is now; `None` when it does not run.
    pub fn of(pid: u32) -> Option<Self> {
        let stat = stat(pid).filter(|s| !matches!(s.state, 'Z' | 'X'))?;
        Some(ProcessId {
            pid,
            start_ticks: stat.start_ticks,
        })
    }

    /// Whether it still runs (a zombie has exited; a process that reused
    /// the pid is another one).
    pub fn is_alive(&self) -> bool {
        ProcessId::of(self.pid).is_some_and(|now| now.start_ticks == self.start_ticks)
    }

    /// When it started, in milliseconds since the Unix epoch.
    pub fn started_at_ms(&self) -> Option<u64> {
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let btime: u64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
        Some(btime * 1000 + self.start_ticks * 1000 / ticks)
    }

    /// Sends `signal` to it, unless it is gone (or its pid now names another
    /// process): `Ok(false)` then.
    pub fn signal(&self, signal: libc::c_int) -> std::io::Result<bool> {
        if !self.is_alive() {
            return Ok(false);
        }
        let pid = libc::pid_t::try_from(self.pid)
            .map_err(|_| std::io::Error::other(format!("pid {} out of range", self.pid)))?;
        // SAFETY: kill(2) with a pid just checked to be this process.
        if unsafe { libc::kill(pid, signal) } == 0 {
            return Ok(true);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ESRCH) {
            Ok(false)
        } else {
            Err(error)
        }
    }
}

/// Whether process `pid` is `ancestor` or runs under it (its parent, its
/// parent's parent, …).
pub fn is_same_or_descendant(pid: u32, ancestor: u32) -> bool {
    let mut current = pid;
    for _ in 0..64 {
        if current == ancestor {
            return true;
        }
        match stat(current) {
            Some(s) if s.ppid > 1 => current = s.ppid,
            _ => return false,
        }
    }
    false
}

/// Starts `command` detached: in a process group of its own (a Ctrl-C
/// meant for `upgrade` does not reach it), stdin closed, stdout and stderr
/// appended to `log`, `environment` added to its environment. It outlives
/// `upgrade`.
pub fn spawn_detached(
    command: &[String],
    environment: &[(String, String)],
    log: &Path,
) -> std::io::Result<tokio::process::Child> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command to run"))?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    tokio::process::Command::new(program)
        .args(args)
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_parsed() {
        let line = "4242 (my (odd) cmd) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.start_ticks, 987654);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn this_process_is_seen() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert!(me.is_alive());
        let started = me.started_at_ms().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(started <= now + 1000, "{started} > {now}");
        assert!(is_same_or_descendant(
            std::process::id(),
            std::process::id()
        ));
        let reused = ProcessId {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.is_alive());
        assert!(!reused.signal(0).unwrap());
    }
}
