//! Keys kept alive under a lease: an instance's registration, a router's
//! report. A keeper renews the lease every third of its TTL; when the
//! registry says the lease is gone (a partition longer than the TTL, a
//! store that lost its data) it grants a new one and writes the key again.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::record::{instance_key, router_key, InstanceRecord, Revision, RouterState};
use super::{LeaseId, RegistryBackend, RegistryError};

/// How soon a keeper tries again after the registry failed to answer, at
/// most (a third of the TTL when that is shorter).
const RETRY: Duration = Duration::from_millis(500);

/// The lease and revision a key is written with now.
#[derive(Debug, Clone, Copy)]
struct Current {
    lease: LeaseId,
    revision: Revision,
    registered: u64,
}

/// A key kept under a lease, shared by its owner and its keeper.
struct Leased {
    backend: Arc<dyn RegistryBackend>,
    key: String,
    ttl: Duration,
    /// Held while the lease or the key is written, so that a report and a
    /// re-registration never leave the key under a lease nobody renews.
    writing: tokio::sync::Mutex<Vec<u8>>,
    current: Mutex<Current>,
}

impl Leased {
    /// Grants a lease and writes the key under it.
    async fn establish(
        backend: Arc<dyn RegistryBackend>,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Arc<Self>, RegistryError> {
        let (lease, revision) = grant_and_put(backend.as_ref(), &key, &value, ttl).await?;
        Ok(Arc::new(Leased {
            backend,
            key,
            ttl,
            writing: tokio::sync::Mutex::new(value),
            current: Mutex::new(Current {
                lease,
                revision,
                registered: 1,
            }),
        }))
    }

    fn current(&self) -> Current {
        *crate::sync::lock(&self.current)
    }

    /// Grants a new lease and writes the key again (its lease was lost).
    async fn reestablish(&self, value: &[u8]) -> Result<(), RegistryError> {
        let (lease, revision) =
            grant_and_put(self.backend.as_ref(), &self.key, value, self.ttl).await?;
        let mut current = crate::sync::lock(&self.current);
        current.lease = lease;
        current.revision = revision;
        current.registered += 1;
        Ok(())
    }

    /// Renews the lease once; writes the key again under a new lease when
    /// the old one is gone.
    async fn renew(&self) -> Result<(), RegistryError> {
        let value = self.writing.lock().await;
        let lease = self.current().lease;
        if within(self.ttl, self.backend.keep_alive(lease)).await? {
            return Ok(());
        }
        tracing::warn!(key = %self.key, "registry lease lost: registering again");
        self.reestablish(&value).await?;
        tracing::info!(key = %self.key, "registered again under a new lease");
        Ok(())
    }

    /// Writes `value` under the current lease (a new one if it was lost).
    async fn write(&self, value: Vec<u8>) -> Result<Revision, RegistryError> {
        let mut held = self.writing.lock().await;
        let lease = self.current().lease;
        let put = within(
            self.ttl,
            self.backend.put(self.key.clone(), value.clone(), lease),
        )
        .await;
        match put {
            Ok(revision) => {
                crate::sync::lock(&self.current).revision = revision;
            }
            Err(RegistryError::LeaseLost(_)) => self.reestablish(&value).await?,
            Err(e) => return Err(e),
        }
        *held = value;
        Ok(self.current().revision)
    }

    /// Revokes the lease: the revision of the delete. A lease already gone
    /// took the key with it: the registry's current revision is then at or
    /// after that delete.
    async fn revoke(&self) -> Result<Revision, RegistryError> {
        let _held = self.writing.lock().await;
        let lease = self.current().lease;
        match within(self.ttl, self.backend.revoke(lease)).await {
            Err(RegistryError::LeaseLost(_)) => {
                let (_, revision) = within(self.ttl, self.backend.list(self.key.clone())).await?;
                Ok(revision)
            }
            other => other,
        }
    }
}

/// Grants a lease of `ttl` and writes `key` under it; revokes the lease
/// when the write fails.
async fn grant_and_put(
    backend: &dyn RegistryBackend,
    key: &str,
    value: &[u8],
    ttl: Duration,
) -> Result<(LeaseId, Revision), RegistryError> {
    let lease = within(ttl, backend.grant(ttl)).await?;
    match within(ttl, backend.put(key.to_string(), value.to_vec(), lease)).await {
        Ok(revision) => Ok((lease, revision)),
        Err(e) => {
            let _ = within(ttl, backend.revoke(lease)).await;
            Err(e)
        }
    }
}

/// `call`, failing as unreachable when it takes longer than `ttl`.
async fn within<T>(
    ttl: Duration,
    call: impl std::future::Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    tokio::time::timeout(ttl, call).await.unwrap_or_else(|_| {
        Err(RegistryError::Unreachable(format!(
            "no answer within {ttl:?}"
        )))
    })
}

/// Renews `leased` every third of its TTL until `stop`.
async fn keep(leased: Arc<Leased>, stop: CancellationToken) {
    let period = (leased.ttl / 3).max(Duration::from_millis(100));
    let retry = period.min(RETRY);
    let mut wait = period;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match leased.renew().await {
            Ok(()) => {
                if failing {
                    tracing::info!(key = %leased.key, "registry reachable again");
                }
                failing = false;
                wait = period;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(key = %leased.key, %error, "cannot renew the registry lease: retrying");
                }
                failing = true;
                wait = retry;
            }
        }
    }
}

/// A leased key and its keeper task.
struct Kept {
    leased: Arc<Leased>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Kept {
    async fn start(
        backend: Arc<dyn RegistryBackend>,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Self, RegistryError> {
        let ttl = Duration::from_secs(ttl.as_secs().max(1));
        let leased = Leased::establish(backend, key, value, ttl).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep(leased.clone(), stop.clone()));
        Ok(Kept {
            leased,
            stop,
            task: Some(task),
        })
    }

    /// Stops the keeper (waiting for a write it is doing), then revokes.
    async fn revoke(mut self) -> Result<Revision, RegistryError> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.leased.revoke().await
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An instance's registration: its record under a lease that a task
/// renews. Dropped without [`deregister`](Self::deregister), the renewals
/// stop and the record goes when the lease expires.
pub struct Registration {
    record: InstanceRecord,
    kept: Kept,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.kept.leased.key)
            .field("lease", &self.lease())
            .finish()
    }
}

impl Registration {
    pub(super) async fn start(
        backend: Arc<dyn RegistryBackend>,
        record: InstanceRecord,
        ttl: Duration,
    ) -> Result<Self, RegistryError> {
        let value = serde_json::to_vec(&record).map_err(|e| RegistryError::BadRecord {
            key: record.key(),
            reason: e.to_string(),
        })?;
        let key = instance_key(&record.service, &record.instance_id);
        let kept = Kept::start(backend, key, value, ttl).await?;
        tracing::info!(service = %record.service, instance = %record.instance_id, ttl = ?kept.leased.ttl, "registered");
        Ok(Registration { record, kept })
    }

    /// The record it keeps.
    pub fn record(&self) -> &InstanceRecord {
        &self.record
    }

    /// The lease the record is under now.
    pub fn lease(&self) -> LeaseId {
        self.kept.leased.current().lease
    }

    /// The revision of the latest write of the record (the registration,
    /// or the re-registration after a lost lease).
    pub fn revision(&self) -> Revision {
        self.kept.leased.current().revision
    }

    /// How many times the record was written under a new lease: 1, plus one
    /// for each lost lease.
    pub fn times_registered(&self) -> u64 {
        self.kept.leased.current().registered
    }

    /// The lease's TTL.
    pub fn ttl(&self) -> Duration {
        self.kept.leased.ttl
    }

    /// Revokes the lease, deleting the record: the revision of the delete,
    /// which routers must apply before the instance stops serving.
    pub async fn deregister(self) -> Result<Revision, RegistryError> {
        let Registration { record, kept } = self;
        let revision = kept.revoke().await?;
        tracing::info!(service = %record.service, instance = %record.instance_id, revision, "deregistered");
        Ok(revision)
    }
}

/// A router's report of the revision it applied, under a lease that a task
/// renews. Dropped without [`stop`](Self::stop), it goes when its lease
/// expires.
pub struct RouterReporter {
    id: String,
    kept: Kept,
    applied: Mutex<Revision>,
}

impl std::fmt::Debug for RouterReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterReporter")
            .field("id", &self.id)
            .field("applied", &self.applied())
            .finish()
    }
}

impl RouterReporter {
    pub(super) async fn start(
        backend: Arc<dyn RegistryBackend>,
        id: String,
        ttl: Duration,
    ) -> Result<Self, RegistryError> {
        let value = state_value(&id, 0);
        let kept = Kept::start(backend, router_key(&id), value, ttl).await?;
        Ok(RouterReporter {
            id,
            kept,
            applied: Mutex::new(0),
        })
    }

    /// The router's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The revision it reported last.
    pub fn applied(&self) -> Revision {
        *crate::sync::lock(&self.applied)
    }

    /// Reports that the router routes with every change up to `revision`.
    /// Writes only when it differs from the last report.
    pub async fn report(&self, revision: Revision) -> Result<(), RegistryError> {
        if self.applied() == revision {
            return Ok(());
        }
        self.kept
            .leased
            .write(state_value(&self.id, revision))
            .await?;
        *crate::sync::lock(&self.applied) = revision;
        Ok(())
    }

    /// Stops reporting: the router's state is deleted.
    pub async fn stop(self) -> Result<Revision, RegistryError> {
        self.kept.revoke().await
    }
}

fn state_value(id: &str, applied_revision: Revision) -> Vec<u8> {
    let state = RouterState {
        id: id.to_string(),
        applied_revision,
    };
    serde_json::to_vec(&state).unwrap_or_default()
}
