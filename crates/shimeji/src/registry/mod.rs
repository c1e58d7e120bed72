//! The service registry: which instances run, where, and which HTTP routes
//! each serves; and which registry revision each router has applied.
//!
//! An instance registers once it is ready (its listeners bound), under a
//! lease of `registry_ttl` seconds (default 10) that it renews every third
//! of it. A crashed instance's record goes away when its lease expires; a
//! stopping one deregisters first (the lease is revoked) and waits until
//! every router has applied that revision before it closes its listener.
//! An instance whose lease was lost (a partition longer than the TTL, an
//! etcd that lost its data) grants a new lease and puts its record again
//! by itself.
//!
//! Routers (gateways, load balancer syncs) [watch](Registry::watcher): a
//! snapshot, then every change from the snapshot's revision on; they list
//! again after a compaction or a lost connection, and keep their last table
//! while the registry cannot be reached (fail static). Each reports the
//! revision it routes with ([`Registry::router`]).
//!
//! Backends: [`MemoryRegistry`] (in process, the default: a multi-lith and
//! its in-process gateway need nothing) and, with feature `etcd`, etcd
//! (`REGISTRY=etcd://host:2379[,host:2379…]`). Both implement the small
//! key/lease/watch interface [`RegistryBackend`], modelled on etcd's, and
//! everything above it (registration, re-registration, router reports,
//! the watcher) is the same code for both.
//!
//! # Key layout
//!
//! ```text
//! /shimeji/v1/instances/<service>/<instance-id>  = InstanceRecord as JSON   (under the instance's lease)
//! /shimeji/v1/routers/<router-id>                = RouterState as JSON      (under the router's lease)
//! ```
//!
//! One revision counts every write of the registry (etcd's store
//! revision): a deregistration returns the revision of its delete, and "every
//! router's `applied_revision` is at least that" means every router has
//! seen it.
//!
//! ```
//! use shimeji::registry::{InstanceRecord, Registry, Route};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), shimeji::registry::RegistryError> {
//! let registry = Registry::memory();
//! let mut watcher = registry.watcher();
//!
//! let mut record = InstanceRecord::new("users", "users-1");
//! record.http = Some("127.0.0.1:8000".into());
//! record.routes.push(Route::new("GET", "/users/{id}"));
//! let registration = registry.register(record, Duration::from_secs(10)).await?;
//!
//! // A router: follows the table and reports what it applied.
//! let router = registry.router("gateway-1", Duration::from_secs(10)).await?;
//! let table = watcher.wait_until(|t| t.instances_of("users").count() == 1).await;
//! router.report(table.revision).await?;
//!
//! // A stopping instance: deregister, then wait for the routers.
//! let revision = registration.deregister().await?;
//! let table = watcher.wait_until(|t| t.revision >= revision).await;
//! assert_eq!(table.instances_of("users").count(), 0);
//! router.report(table.revision).await?;
//! let applied = registry.wait_applied(revision, Duration::from_secs(5)).await?;
//! assert!(applied.all_applied);
//! # Ok(()) }
//! ```

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
mod lease;
mod memory;
mod record;
mod watch;

pub use lease::{Registration, RouterReporter};
pub use memory::MemoryRegistry;
pub use record::{
    host_name, instance_key, parse_instance_key, router_key, InstanceRecord, Revision, Route,
    RouterState, INSTANCES_PREFIX, KEY_PREFIX, ROUTERS_PREFIX,
};
pub use watch::{Table, Watcher};

/// A lease's id.
pub type LeaseId = i64;

/// Default lease TTL of an instance (`registry_ttl`): 10 s.
pub const DEFAULT_TTL: Duration = crate::config::DEFAULT_REGISTRY_TTL;

/// What went wrong with the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry URL cannot be used.
    #[error("registry URL `{url}`: {reason}")]
    BadUrl {
        /// The URL, its password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry did not answer.
    #[error("the registry is unreachable: {0}")]
    Unreachable(String),
    /// The history a watch asked for was compacted: list again.
    #[error("the registry's history before revision {compact_revision} was compacted")]
    Compacted {
        /// The oldest revision still kept.
        compact_revision: Revision,
    },
    /// The lease expired or was revoked.
    #[error("lease {0:x} is not known to the registry (expired or revoked)")]
    LeaseLost(LeaseId),
    /// A value is not what this version understands.
    #[error("registry key `{key}` holds a bad value: {reason}")]
    BadRecord {
        /// The key.
        key: String,
        /// Why it could not be read.
        reason: String,
    },
    /// A name cannot be used as a key segment.
    #[error("`{0}` cannot be a registry name (empty, or has `/` or spaces)")]
    BadName(String),
}

crate::error::shimeji_exception! {
    RegistryError => "RegistryError",
}

/// A key, its value and the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
    /// The revision that wrote it.
    pub mod_revision: Revision,
}

/// One change a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key was written.
    Put(KeyValue),
    /// A key was deleted (or its lease ended) at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: Revision,
    },
}

impl Change {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            Change::Put(kv) => kv.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }

    /// The key it changed.
    pub fn key(&self) -> &str {
        match self {
            Change::Put(kv) => &kv.key,
            Change::Delete { key, .. } => key,
        }
    }
}

/// The changes of a watch, batch after batch, in revision order; a batch
/// never splits a revision. It ends with an error (`Compacted`, or
/// `Unreachable` when the connection is lost) or when the registry closes.
pub type ChangeStream = BoxStream<'static, Result<Vec<Change>, RegistryError>>;

/// The storage a registry runs on: keys under leases, one revision, a
/// watch. Modelled on etcd's API; implemented by [`MemoryRegistry`] and,
/// with feature `etcd`, [`etcd::EtcdRegistry`].
pub trait RegistryBackend: Send + Sync + 'static {
    /// `memory`, `etcd`, …
    fn name(&self) -> &'static str;

    /// Whether other processes read it (routers elsewhere may route to this
    /// instance): a stopping instance then waits a little even when no
    /// router reports.
    fn is_remote(&self) -> bool;

    /// Grants a lease of `ttl` (whole seconds, at least 1).
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, RegistryError>>;

    /// Renews `lease` to its full TTL: `Ok(false)` when the lease is gone
    /// (expired, revoked, or the store lost it).
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<bool, RegistryError>>;

    /// Revokes `lease`, deleting its keys: the revision after the delete.
    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<Revision, RegistryError>>;

    /// Writes `key` under `lease`: the revision of the write.
    fn put(
        &self,
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> BoxFuture<'_, Result<Revision, RegistryError>>;

    /// Every key under `prefix`, and the revision they were read at.
    fn list(
        &self,
        prefix: String,
    ) -> BoxFuture<'_, Result<(Vec<KeyValue>, Revision), RegistryError>>;

    /// The changes under `prefix` from revision `from` on (inclusive).
    /// `Compacted` (as the call's error or the stream's first item) when
    /// that history is gone.
    fn watch(
        &self,
        prefix: String,
        from: Revision,
    ) -> BoxFuture<'_, Result<ChangeStream, RegistryError>>;

    /// Drops the history before `revision` (an operator's job; tests use
    /// it to check that watchers list again).
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), RegistryError>>;
}

/// A snapshot of the instances, and the revision it was read at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every instance record, in key order.
    pub instances: Vec<InstanceRecord>,
    /// The revision it was read at: watch from the next one.
    pub revision: Revision,
}

/// How a wait for the routers ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The routers that were reporting.
    pub routers: usize,
    /// Whether every one of them applied the revision in time (true when
    /// there were none).
    pub all_applied: bool,
    /// The routers still behind when the wait ended.
    pub behind: Vec<RouterState>,
}

/// A registry: a [`RegistryBackend`] and what is built on it. Cheap to
/// clone; clones share the backend.
#[derive(Clone)]
pub struct Registry {
    backend: Arc<dyn RegistryBackend>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Registry")
            .field(&self.backend.name())
            .finish()
    }
}

impl Registry {
    /// A registry on `backend`.
    pub fn new(backend: impl RegistryBackend) -> Self {
        Registry {
            backend: Arc::new(backend),
        }
    }

    /// A fresh in-process registry.
    pub fn memory() -> Self {
        Self::new(MemoryRegistry::new())
    }

    /// The registry `url` names: `memory` (or `memory://`), or with feature
    /// `etcd`, `etcd://host:2379[,host:2379…]`.
    pub async fn connect(url: &str) -> Result<Self, RegistryError> {
        let bad = |reason: &str| RegistryError::BadUrl {
            url: crate::config::redact_uri(url),
            reason: reason.into(),
        };
        let url = url.trim();
        if url == "memory" || url == "memory://" {
            return Ok(Self::memory());
        }
        if let Some(rest) = url.strip_prefix("etcd://") {
            #[cfg(feature = "etcd")]
            {
                let endpoints = etcd::endpoints(rest).map_err(|r| bad(&r))?;
                return Ok(Self::new(etcd::EtcdRegistry::connect(endpoints).await?));
            }
            #[cfg(not(feature = "etcd"))]
            {
                let _ = rest;
                return Err(bad(
                    "this build of shimeji has no etcd backend (feature `etcd`)",
                ));
            }
        }
        Err(bad("expected `memory` or `etcd://host:port[,host:port…]`"))
    }

    /// The registry `config` names with `REGISTRY` (or `registry`); `None`
    /// when it names none.
    pub async fn from_config(config: &Config) -> Result<Option<Self>, RegistryError> {
        match registry_url(config) {
            Some(url) => Self::connect(&url).await.map(Some),
            None => Ok(None),
        }
    }

    /// Its backend.
    pub fn backend(&self) -> &Arc<dyn RegistryBackend> {
        &self.backend
    }

    /// The backend's name (`memory`, `etcd`).
    pub fn name(&self) -> &'static str {
        self.backend.name()
    }

    /// Whether other processes read it.
    pub fn is_remote(&self) -> bool {
        self.backend.is_remote()
    }

    /// Puts `record` under a new lease of `ttl` (at least 1 s), renewed
    /// every third of it until deregistered; re-registered by itself when
    /// the lease is lost.
    pub async fn register(
        &self,
        record: InstanceRecord,
        ttl: Duration,
    ) -> Result<Registration, RegistryError> {
        for name in [&record.service, &record.instance_id] {
            if !record::valid_segment(name) {
                return Err(RegistryError::BadName(name.clone()));
            }
        }
        Registration::start(self.backend.clone(), record, ttl).await
    }

    /// Every instance, and the revision they were read at.
    pub async fn snapshot(&self) -> Result<Snapshot, RegistryError> {
        let (kvs, revision) = self.backend.list(INSTANCES_PREFIX.into()).await?;
        let instances = kvs.iter().filter_map(decode_instance).collect();
        Ok(Snapshot {
            instances,
            revision,
        })
    }

    /// The raw changes of the instances from revision `from` on; most
    /// routers want a [`watcher`](Self::watcher), which lists again when
    /// this stream ends.
    pub async fn watch_from(&self, from: Revision) -> Result<ChangeStream, RegistryError> {
        self.backend.watch(INSTANCES_PREFIX.into(), from).await
    }

    /// A watcher that keeps a table of the instances (snapshot, then
    /// changes; lists again after a compaction or a lost connection; keeps
    /// its table while the registry is unreachable).
    pub fn watcher(&self) -> Watcher {
        Watcher::start(self.clone())
    }

    /// Starts reporting as router `id`, under a lease of `ttl`: its applied
    /// revision is 0 until [`RouterReporter::report`] says more.
    pub async fn router(&self, id: &str, ttl: Duration) -> Result<RouterReporter, RegistryError> {
        if !record::valid_segment(id) {
            return Err(RegistryError::BadName(id.into()));
        }
        RouterReporter::start(self.backend.clone(), id.into(), ttl).await
    }

    /// The routers that report, with their applied revisions.
    pub async fn routers(&self) -> Result<Vec<RouterState>, RegistryError> {
        let (kvs, _) = self.backend.list(ROUTERS_PREFIX.into()).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| match serde_json::from_slice(&kv.value) {
                Ok(state) => Some(state),
                Err(error) => {
                    tracing::warn!(key = %kv.key, %error, "router state not understood: ignored");
                    None
                }
            })
            .collect())
    }

    /// Waits until every reporting router has applied `revision`, for at
    /// most `timeout`; returns at once when no router reports.
    pub async fn wait_applied(
        &self,
        revision: Revision,
        timeout: Duration,
    ) -> Result<Applied, RegistryError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let routers = self.routers().await?;
            let count = routers.len();
            let behind: Vec<RouterState> = routers
                .into_iter()
                .filter(|r| r.applied_revision < revision)
                .collect();
            if behind.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(Applied {
                    routers: count,
                    all_applied: behind.is_empty(),
                    behind,
                });
            }
            tokio::time::sleep(APPLIED_POLL).await;
        }
    }
}

/// How often [`Registry::wait_applied`] reads the routers' states.
const APPLIED_POLL: Duration = Duration::from_millis(10);

/// The registry URL `config` sets: `REGISTRY`, else `registry`.
pub fn registry_url(config: &Config) -> Option<String> {
    ["REGISTRY", "registry"]
        .iter()
        .find_map(|key| config.get::<String>(key).ok().flatten())
        .filter(|url| !url.trim().is_empty())
}

/// The instance record a key/value holds; `None` (logged) when it holds
/// none this version understands.
pub(crate) fn decode_instance(kv: &KeyValue) -> Option<InstanceRecord> {
    parse_instance_key(&kv.key)?;
    match serde_json::from_slice::<InstanceRecord>(&kv.value) {
        Ok(record) if record.key() == kv.key => Some(record),
        Ok(_) => {
            tracing::warn!(key = %kv.key, "instance record under another instance's key: ignored");
            None
        }
        Err(error) => {
            tracing::warn!(key = %kv.key, %error, "instance record not understood: ignored");
            None
        }
    }
}
