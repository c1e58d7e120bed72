//! The in-process registry: etcd's semantics (leases that expire, one
//! revision, a watch from any revision still in its history) in a map.
//! Clones share one table.

use futures::future::BoxFuture;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{Change, Revision};
use super::{ChangeStream, KeyValue, LeaseId, RegistryBackend, RegistryError};

/// Revisions of history kept for watches; older ones are compacted.
const HISTORY: usize = 10_000;
/// Batches a watcher may fall behind before it must list again.
const LIVE_BUFFER: usize = 1024;
/// How often expired leases are looked for (etcd: every 500 ms).
const REAP_EVERY: Duration = Duration::from_millis(100);

/// An in-process registry. Cheap to clone; clones share one table, so a
/// runner and a gateway in one process see each other through it.
#[derive(Clone)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = crate::sync::lock(&self.state);
        f.debug_struct("MemoryRegistry")
            .field("revision", &state.revision)
            .field("keys", &state.kvs.len())
            .finish()
    }
}

struct Entry {
    value: Vec<u8>,
    lease: LeaseId,
    mod_revision: Revision,
}

struct Lease {
    ttl: Duration,
    expires: Instant,
}

struct State {
    revision: Revision,
    /// History before this revision is gone.
    compacted: Revision,
    kvs: BTreeMap<String, Entry>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    /// Every change kept, oldest first.
    history: VecDeque<Change>,
    live: broadcast::Sender<Vec<Change>>,
    reaping: bool,
}

impl State {
    /// Deletes the keys of `lease` in one revision; the revision after.
    fn end_lease(&mut self, lease: LeaseId) -> Revision {
        self.leases.remove(&lease);
        let keys: Vec<String> = self
            .kvs
            .iter()
            .filter(|(_, e)| e.lease == lease)
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return self.revision;
        }
        self.revision += 1;
        let revision = self.revision;
        let changes = keys
            .into_iter()
            .map(|key| {
                self.kvs.remove(&key);
                Change::Delete { key, revision }
            })
            .collect();
        self.publish(changes);
        revision
    }

    fn publish(&mut self, changes: Vec<Change>) {
        self.history.extend(changes.iter().cloned());
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.compacted = self.compacted.max(old.revision() + 1);
            }
        }
        let _ = self.live.send(changes);
    }

    fn lease_alive(&self, lease: LeaseId, now: Instant) -> bool {
        self.leases.get(&lease).is_some_and(|l| l.expires > now)
    }

    /// Ends every lease that expired.
    fn reap(&mut self, now: Instant) {
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for lease in expired {
            self.end_lease(lease);
        }
    }
}

impl MemoryRegistry {
    /// An empty registry at revision 1.
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        MemoryRegistry {
            state: Arc::new(Mutex::new(State {
                revision: 1,
                compacted: 0,
                kvs: BTreeMap::new(),
                leases: HashMap::new(),
                next_lease: 1,
                history: VecDeque::new(),
                live,
                reaping: false,
            })),
        }
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        crate::sync::lock(&self.state).revision
    }

    /// Starts the task that ends expired leases, once (it needs a runtime,
    /// so it starts with the first lease).
    fn start_reaper(&self, state: &mut State) {
        if state.reaping {
            return;
        }
        state.reaping = true;
        let weak: Weak<Mutex<State>> = Arc::downgrade(&self.state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                crate::sync::lock(&state).reap(Instant::now());
            }
        });
    }
}

impl RegistryBackend for MemoryRegistry {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn is_remote(&self) -> bool {
        false
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, RegistryError>> {
        Box::pin(async move {
            let mut state = crate::sync::lock(&self.state);
            self.start_reaper(&mut state);
            let ttl = Duration::from_secs(ttl.as_secs().max(1));
            let id = state.next_lease;
            state.next_lease += 1;
            state.leases.insert(
                id,
                Lease {
                    ttl,
                    expires: Instant::now() + ttl,
                },
            );
            Ok(id)
        })
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<bool, RegistryError>> {
        Box::pin(async move {
            let mut state = crate::sync::lock(&self.state);
            let now = Instant::now();
            if !state.lease_alive(lease, now) {
                state.reap(now);
                return Ok(false);
            }
            if let Some(l) = state.leases.get_mut(&lease) {
                l.expires = now + l.ttl;
            }
            Ok(true)
        })
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<Revision, RegistryError>> {
        Box::pin(async move {
            let mut state = crate::sync::lock(&self.state);
            if !state.lease_alive(lease, Instant::now()) {
                state.reap(Instant::now());
                return Err(RegistryError::LeaseLost(lease));
            }
            Ok(state.end_lease(lease))
        })
    }

    fn put(
        &self,
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> BoxFuture<'_, Result<Revision, RegistryError>> {
        Box::pin(async move {
            let mut state = crate::sync::lock(&self.state);
            if !state.lease_alive(lease, Instant::now()) {
                return Err(RegistryError::LeaseLost(lease));
            }
            state.revision += 1;
            let revision = state.revision;
            state.kvs.insert(
                key.clone(),
                Entry {
                    value: value.clone(),
                    lease,
                    mod_revision: revision,
                },
            );
            state.publish(vec![Change::Put(KeyValue {
                key,
                value,
                mod_revision: revision,
            })]);
            Ok(revision)
        })
    }

    fn list(
        &self,
        prefix: String,
    ) -> BoxFuture<'_, Result<(Vec<KeyValue>, Revision), RegistryError>> {
        Box::pin(async move {
            let state = crate::sync::lock(&self.state);
            let kvs = state
                .kvs
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(key, e)| KeyValue {
                    key: key.clone(),
                    value: e.value.clone(),
                    mod_revision: e.mod_revision,
                })
                .collect();
            Ok((kvs, state.revision))
        })
    }

    fn watch(
        &self,
        prefix: String,
        from: Revision,
    ) -> BoxFuture<'_, Result<ChangeStream, RegistryError>> {
        Box::pin(async move {
            let state = crate::sync::lock(&self.state);
            if from < state.compacted {
                return Err(RegistryError::Compacted {
                    compact_revision: state.compacted,
                });
            }
            // Under the lock: nothing is published between the history read
            // and the subscription.
            let mut past: Vec<Vec<Change>> = Vec::new();
            for change in state
                .history
                .iter()
                .filter(|c| c.revision() >= from && c.key().starts_with(&prefix))
            {
                match past.last_mut() {
                    Some(batch) if batch[0].revision() == change.revision() => {
                        batch.push(change.clone())
                    }
                    _ => past.push(vec![change.clone()]),
                }
            }
            let live = state.live.subscribe();
            drop(state);
            let filter = move |changes: Vec<Change>| -> Vec<Change> {
                changes
                    .into_iter()
                    .filter(|c| c.revision() >= from && c.key().starts_with(&prefix))
                    .collect()
            };
            let live = futures::stream::unfold(Some(live), move |live| {
                let filter = filter.clone();
                async move {
                    let mut live = live?;
                    loop {
                        match live.recv().await {
                            Ok(changes) => {
                                let changes = filter(changes);
                                if !changes.is_empty() {
                                    return Some((Ok(changes), Some(live)));
                                }
                            }
                            // Fell behind: what it missed is as good as compacted.
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                let error = RegistryError::Compacted {
                                    compact_revision: 0,
                                };
                                return Some((Err(error), None));
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
            });
            let stream = futures::stream::iter(past.into_iter().map(Ok)).chain(live);
            Ok(stream.boxed())
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let mut state = crate::sync::lock(&self.state);
            let revision = revision.min(state.revision);
            while state
                .history
                .front()
                .is_some_and(|c| c.revision() < revision)
            {
                state.history.pop_front();
            }
            state.compacted = state.compacted.max(revision);
            Ok(())
        })
    }
}
