//! The state file of an upgrade, `<log dir>/<service>.upgrade.json`: which
//! processes it started and stopped, so that `--abort` knows what to stop
//! and a second upgrade of the service refuses to run alongside.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::process::ProcessId;

/// Where an upgrade is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Rolling.
    Running,
    /// Every old instance was replaced.
    Done,
    /// A new instance was not good: the roll stopped.
    Failed,
    /// `--abort` stopped the new instances.
    Aborted,
}

/// A process the upgrade started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The process it started.
    pub process: ProcessId,
    /// The instance it registered as, once it did; its process (the started
    /// one or one under it).
    pub instance: Option<(String, ProcessId)>,
    /// Its output.
    pub log: PathBuf,
}

impl Started {
    /// The process to stop: the instance's, else the started one.
    pub fn target(&self) -> ProcessId {
        self.instance.as_ref().map_or(self.process, |(_, p)| *p)
    }
}

/// An old instance the upgrade stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    /// Its instance id.
    pub instance_id: String,
    /// Its pid.
    pub pid: u32,
    /// Whether it had to be killed.
    pub killed: bool,
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeState {
    /// The service.
    pub service: String,
    /// The new command.
    pub command: Vec<String>,
    /// The `shimeji upgrade` process that runs it.
    pub upgrader: ProcessId,
    /// Where it is.
    pub status: Status,
    /// The processes it started, in order.
    pub started: Vec<Started>,
    /// The old instances it stopped, in order.
    pub stopped: Vec<Stopped>,
}

/// The state file of `service`'s upgrade in `dir`.
pub fn path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.upgrade.json"))
}

impl UpgradeState {
    /// Reads the state file at `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is not an upgrade state file: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes it to `path` (a temporary file renamed over it, so a reader
    /// never sees half of it).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| format!("cannot encode the upgrade state: {e}"))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Whether an upgrade is rolling now (its state says so and its
    /// process still runs).
    pub fn is_running(&self) -> bool {
        self.status == Status::Running && self.upgrader.is_alive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_file() {
        let dir =
            std::env::temp_dir().join(format!("shimeji-upgrade-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = path(&dir, "notes");
        assert_eq!(UpgradeState::load(&file).unwrap(), None);
        let me = ProcessId::of(std::process::id()).unwrap();
        let state = UpgradeState {
            service: "notes".into(),
            command: vec!["notes".into(), "--v2".into()],
            upgrader: me,
            status: Status::Running,
            started: vec![Started {
                process: me,
                instance: Some(("i-1".into(), me)),
                log: dir.join("notes-1.log"),
            }],
            stopped: vec![Stopped {
                instance_id: "i-0".into(),
                pid: 1,
                killed: false,
            }],
        };
        state.save(&file).unwrap();
        let read = UpgradeState::load(&file).unwrap().unwrap();
        assert_eq!(read, state);
        assert!(read.is_running());
        assert_eq!(read.started[0].target(), me);
        std::fs::write(&file, "{").unwrap();
        assert!(UpgradeState::load(&file).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
