//! A router's view of the registry: a table of the instances that follows
//! every change. It lists (a snapshot at revision R), watches from R + 1,
//! and lists again when the watch ends: after a compaction (its history
//! is gone), or a lost connection (the store may even have been replaced,
//! its revisions restarted). While the registry cannot be reached it keeps
//! its last table (fail static) and marks it `connected: false`.

use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::record::{parse_instance_key, InstanceRecord, Revision};
use super::{decode_instance, Change, Registry, RegistryError};

/// First wait before listing again after a failure; it doubles up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two tries to reach the registry.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The instances as a watcher last saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Every change up to this revision is in the table (0: nothing read yet).
    pub revision: Revision,
    /// The instances, by `(service, instance_id)`.
    pub instances: BTreeMap<(String, String), InstanceRecord>,
    /// Whether the watch runs now; false while the registry cannot be
    /// reached, when the table is the last one seen.
    pub connected: bool,
    /// How many times the watcher listed the registry (1 after the first
    /// snapshot; more after compactions and reconnections).
    pub lists: u64,
}

impl Table {
    /// The instances of `service`.
    pub fn instances_of<'a>(
        &'a self,
        service: &'a str,
    ) -> impl Iterator<Item = &'a InstanceRecord> + 'a {
        self.instances
            .iter()
            .filter(move |((s, _), _)| s == service)
            .map(|(_, r)| r)
    }

    /// Instance `instance_id` of `service`, if it is registered.
    pub fn get(&self, service: &str, instance_id: &str) -> Option<&InstanceRecord> {
        self.instances
            .get(&(service.to_string(), instance_id.to_string()))
    }

    /// Applies one batch of changes (one or more revisions).
    fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            self.revision = self.revision.max(change.revision());
            match change {
                Change::Put(kv) => {
                    if let Some(record) = decode_instance(&kv) {
                        let key = (record.service.clone(), record.instance_id.clone());
                        self.instances.insert(key, record);
                    }
                }
                Change::Delete { key, .. } => {
                    if let Some((service, id)) = parse_instance_key(&key) {
                        self.instances
                            .remove(&(service.to_string(), id.to_string()));
                    }
                }
            }
        }
    }
}

/// Follows the registry in a task of its own, until dropped: lists it,
/// watches from the next revision, lists again after a compaction or a
/// lost connection, and keeps its last table (marked not connected) while
/// the registry cannot be reached. See the [registry's docs](super).
pub struct Watcher {
    table: watch::Receiver<Arc<Table>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table();
        f.debug_struct("Watcher")
            .field("revision", &table.revision)
            .field("instances", &table.instances.len())
            .field("connected", &table.connected)
            .finish()
    }
}

impl Watcher {
    /// Starts following `registry` (needs a Tokio runtime).
    pub(super) fn start(registry: Registry) -> Self {
        let (tx, table) = watch::channel(Arc::new(Table::default()));
        let task = tokio::spawn(follow(registry, tx));
        Watcher { table, task }
    }

    /// The table now.
    pub fn table(&self) -> Arc<Table> {
        self.table.borrow().clone()
    }

    /// A receiver that sees every new table (cheap to clone).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Table>> {
        self.table.clone()
    }

    /// Waits for the next table; the new one.
    pub async fn changed(&mut self) -> Arc<Table> {
        // The sender lives as long as the task, which lives as long as self.
        let _ = self.table.changed().await;
        self.table.borrow_and_update().clone()
    }

    /// Waits until the table satisfies `check`; that table.
    pub async fn wait_until(&mut self, mut check: impl FnMut(&Table) -> bool) -> Arc<Table> {
        loop {
            let table = self.table.borrow_and_update().clone();
            if check(&table) {
                return table;
            }
            if self.table.changed().await.is_err() {
                return self.table();
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lists, watches, lists again; forever.
async fn follow(registry: Registry, tx: watch::Sender<Arc<Table>>) {
    let mut backoff = MIN_BACKOFF;
    let mut lists = 0;
    loop {
        let failure = match registry.snapshot().await {
            Err(error) => error,
            Ok(snapshot) => {
                lists += 1;
                let mut table = Table {
                    revision: snapshot.revision,
                    instances: BTreeMap::new(),
                    connected: true,
                    lists,
                };
                for record in snapshot.instances {
                    let key = (record.service.clone(), record.instance_id.clone());
                    table.instances.insert(key, record);
                }
                tracing::debug!(
                    revision = table.revision,
                    instances = table.instances.len(),
                    "registry listed"
                );
                let from = table.revision + 1;
                tx.send_replace(Arc::new(table.clone()));
                backoff = MIN_BACKOFF;
                match registry.watch_from(from).await {
                    Err(error) => error,
                    Ok(mut changes) => loop {
                        match changes.next().await {
                            Some(Ok(batch)) => {
                                table.apply(batch);
                                tx.send_replace(Arc::new(table.clone()));
                            }
                            Some(Err(error)) => break error,
                            None => break RegistryError::Unreachable("the watch ended".into()),
                        }
                    },
                }
            }
        };
        match &failure {
            RegistryError::Compacted { compact_revision } => {
                tracing::info!(
                    compact_revision,
                    "registry history compacted: listing again"
                );
            }
            error => {
                tracing::warn!(%error, "registry watch lost: keeping the last table");
                tx.send_if_modified(|table| {
                    if !table.connected {
                        return false;
                    }
                    let mut stale = Table::clone(table);
                    stale.connected = false;
                    *table = Arc::new(stale);
                    true
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
