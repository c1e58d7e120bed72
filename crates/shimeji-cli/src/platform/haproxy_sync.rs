//! `shimeji haproxy-sync`: keeps HAProxy's backends in step with the
//! service registry through HAProxy's runtime API, with no reload.
//!
//! Service `S` is served by backend `<prefix>S`, declared (with no server)
//! in haproxy.cfg. Each registered instance of `S` with an HTTP address is a
//! server of that backend named after its instance id. The sync owns every
//! server of the backends it manages: those of the services it has seen in
//! the registry and, when the prefix is not empty, every backend whose name
//! starts with it (so the servers of a service that went away while the
//! sync was stopped are removed too).
//!
//! On each pass (a change in the registry, else every `resync`):
//!
//! - a new instance: `add server B/N ADDR [options]`, `enable health` when
//!   the options ask for checks, `enable server`;
//! - a gone instance: `set server B/N state drain` (no new request goes
//!   there; those in flight finish), then once its sessions are over
//!   (`show stat`: `scur` and `qcur` 0) or after `drain_timeout`:
//!   `set server … state maint` and `del server`;
//! - an instance back under the same id: its server is moved and made ready.
//!
//! After a pass that left HAProxy in step with the table, the sync reports
//! the table's revision as applied (a router, like a gateway): a stopping
//! instance waits for that before it closes its listener, so HAProxy never
//! sends it a request it would refuse. A pass that fails (HAProxy
//! unreachable, a command refused) is logged and retried, and reports
//! nothing. Servers added at run time do not survive an HAProxy restart or
//! reload; the next pass (within `resync`) adds them again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shimeji::registry::{Registry, RouterReporter, Table};

use super::haproxy_api::{server_name, valid_name, HaproxyError, RuntimeApi, ServerState};

/// How the sync maps the registry to HAProxy.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Backend of service `S`: `<backend_prefix>S`.
    pub backend_prefix: String,
    /// Server keywords given to `add server` (`check inter 1s`, …).
    pub server_options: String,
    /// Longest time between two passes when nothing changes.
    pub resync: Duration,
    /// How long a drained server may keep sessions before they are shut.
    pub drain_timeout: Duration,
}

/// How often a pass runs while servers drain.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// Longest wait before retrying a pass that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Servers added.
    pub added: usize,
    /// Servers put to drain.
    pub drained: usize,
    /// Servers deleted.
    pub deleted: usize,
    /// Servers still draining.
    pub draining: usize,
}

/// One server the table asks for.
struct Wanted {
    addr: SocketAddr,
    instance_id: String,
}

/// The state of a sync between passes.
pub struct HaproxySync {
    api: RuntimeApi,
    options: SyncOptions,
    /// Backends whose servers it owns.
    managed: BTreeSet<String>,
    /// Servers being drained, by `(backend, server)`, and since when.
    draining: HashMap<(String, String), Instant>,
    /// Addresses of the instances, by what their records say.
    resolved: HashMap<String, SocketAddr>,
    /// Problems already logged (a missing backend, a bad address), so a
    /// pass every second does not repeat them.
    reported: HashSet<String>,
}

impl HaproxySync {
    /// A sync of the HAProxy behind `api`.
    pub fn new(api: RuntimeApi, options: SyncOptions) -> Self {
        HaproxySync {
            api,
            options,
            managed: BTreeSet::new(),
            draining: HashMap::new(),
            resolved: HashMap::new(),
            reported: HashSet::new(),
        }
    }

    /// Logs `message` once for `key` (until the problem goes away).
    fn report_once(&mut self, key: String, message: impl FnOnce() -> String) {
        if self.reported.insert(key) {
            tracing::error!("{}", message());
        }
    }

    /// The address of an instance's `host:port`.
    async fn resolve(&mut self, http: &str) -> Option<SocketAddr> {
        if let Ok(addr) = http.parse::<SocketAddr>() {
            return Some(addr);
        }
        if let Some(addr) = self.resolved.get(http) {
            return Some(*addr);
        }
        match tokio::net::lookup_host(http).await {
            Ok(mut addrs) => {
                let addr = addrs.next()?;
                self.resolved.insert(http.to_string(), addr);
                Some(addr)
            }
            Err(error) => {
                self.report_once(format!("resolve {http}"), || {
                    format!("cannot resolve instance address `{http}`: {error}; not routed")
                });
                None
            }
        }
    }

    /// The servers `table` asks for, by backend then server name.
    async fn wanted(
        &mut self,
        table: &Table,
        backends: &BTreeSet<String>,
    ) -> BTreeMap<String, BTreeMap<String, Wanted>> {
        let mut wanted: BTreeMap<String, BTreeMap<String, Wanted>> = BTreeMap::new();
        let mut seen_http = HashSet::new();
        for record in table.instances.values() {
            let Some(http) = record.http.as_deref() else {
                continue;
            };
            seen_http.insert(http.to_string());
            let backend = format!("{}{}", self.options.backend_prefix, record.service);
            if !valid_name(&backend) {
                self.report_once(format!("name {backend}"), || {
                    format!(
                        "service `{}` cannot be an HAProxy backend name (`{backend}`); not routed",
                        record.service
                    )
                });
                continue;
            }
            self.managed.insert(backend.clone());
            if !backends.contains(&backend) {
                let error = HaproxyError::NoSuchBackend(backend.clone());
                self.report_once(format!("backend {backend}"), || {
                    format!("{error}: service `{}` is not routed", record.service)
                });
                continue;
            }
            self.reported.remove(&format!("backend {backend}"));
            let Some(addr) = self.resolve(http).await else {
                continue;
            };
            wanted.entry(backend).or_default().insert(
                server_name(&record.instance_id),
                Wanted {
                    addr,
                    instance_id: record.instance_id.clone(),
                },
            );
        }
        self.resolved.retain(|http, _| seen_http.contains(http));
        wanted
    }

    /// Brings HAProxy in step with `table`. An error leaves the rest of
    /// the pass for the next one.
    pub async fn apply(&mut self, table: &Table) -> Result<Pass, HaproxyError> {
        let backends = self.api.backends().await?;
        if !self.options.backend_prefix.is_empty() {
            let prefix = &self.options.backend_prefix;
            self.managed.extend(
                backends
                    .iter()
                    .filter(|b| b.starts_with(prefix.as_str()))
                    .cloned(),
            );
        }
        let wanted = self.wanted(table, &backends).await;
        let mut present: BTreeMap<String, Vec<ServerState>> = BTreeMap::new();
        for server in self.api.servers().await? {
            present
                .entry(server.backend.clone())
                .or_default()
                .push(server);
        }
        let mut pass = Pass::default();
        let mut loads = None;
        let managed: Vec<String> = self
            .managed
            .iter()
            .filter(|b| backends.contains(*b))
            .cloned()
            .collect();
        let empty_wanted = BTreeMap::new();
        let empty_present = Vec::new();
        for backend in &managed {
            let want = wanted.get(backend).unwrap_or(&empty_wanted);
            let have = present.get(backend).unwrap_or(&empty_present);
            for (name, server) in want {
                match have.iter().find(|s| &s.name == name) {
                    None => {
                        self.add(backend, name, server).await?;
                        pass.added += 1;
                    }
                    Some(state) => self.keep(backend, name, server, state).await?,
                }
            }
            for state in have.iter().filter(|s| !want.contains_key(&s.name)) {
                let key = (backend.clone(), state.name.clone());
                if state.is_ready() {
                    self.api.set_state(backend, &state.name, "drain").await?;
                    tracing::info!(backend, server = %state.name, "instance gone: server draining");
                    self.draining.insert(key, Instant::now());
                    pass.drained += 1;
                    continue;
                }
                let since = *self
                    .draining
                    .entry(key.clone())
                    .or_insert_with(Instant::now);
                if loads.is_none() {
                    loads = Some(self.api.loads().await?);
                }
                let load = loads
                    .as_ref()
                    .and_then(|l| l.get(&key))
                    .copied()
                    .unwrap_or_default();
                let busy = load.sessions + load.queued;
                if busy > 0 && since.elapsed() < self.options.drain_timeout {
                    pass.draining += 1;
                    continue;
                }
                if busy > 0 {
                    tracing::warn!(backend, server = %state.name, sessions = busy, timeout = ?self.options.drain_timeout, "drain took too long: shutting its sessions");
                    self.api.shutdown_sessions(backend, &state.name).await?;
                }
                if !state.is_maint() {
                    self.api.set_state(backend, &state.name, "maint").await?;
                }
                match self.api.del_server(backend, &state.name).await {
                    Ok(()) => {
                        tracing::info!(backend, server = %state.name, drained = ?since.elapsed(), "server deleted");
                        self.draining.remove(&key);
                        pass.deleted += 1;
                    }
                    Err(HaproxyError::ServerBusy(server)) => {
                        tracing::debug!(%server, "idle connections left: deleting it on a later pass");
                        pass.draining += 1;
                    }
                    Err(HaproxyError::NoSuchServer(_)) => {
                        self.draining.remove(&key);
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        // Forget drains of servers that are no longer there.
        self.draining.retain(|(b, s), _| {
            present
                .get(b)
                .is_some_and(|v| v.iter().any(|x| &x.name == s))
        });
        Ok(pass)
    }

    /// Adds a server for a new instance and opens it to traffic.
    async fn add(
        &mut self,
        backend: &str,
        name: &str,
        server: &Wanted,
    ) -> Result<(), HaproxyError> {
        let options = self.options.server_options.trim();
        match self
            .api
            .add_server(backend, name, server.addr, options)
            .await
        {
            Ok(()) => {}
            Err(HaproxyError::Refused { answer, .. }) if answer.contains("Already exists") => {}
            Err(error) => return Err(error),
        }
        if options.split_whitespace().any(|w| w == "check") {
            self.api.enable_health(backend, name).await?;
        }
        self.api.enable_server(backend, name).await?;
        self.draining
            .remove(&(backend.to_string(), name.to_string()));
        tracing::info!(backend, server = name, instance = %server.instance_id, addr = %server.addr, "instance registered: server added");
        Ok(())
    }

    /// Keeps a wanted server that exists: at the right address, ready.
    async fn keep(
        &mut self,
        backend: &str,
        name: &str,
        server: &Wanted,
        state: &ServerState,
    ) -> Result<(), HaproxyError> {
        if !state.is_at(server.addr) {
            self.api.set_addr(backend, name, server.addr).await?;
            tracing::info!(backend, server = name, addr = %server.addr, "instance moved: server address changed");
        }
        if !state.is_ready() {
            self.api.set_state(backend, name, "ready").await?;
            self.draining
                .remove(&(backend.to_string(), name.to_string()));
            tracing::info!(backend, server = name, "instance back: server ready");
        }
        Ok(())
    }
}

/// Follows `registry` and keeps HAProxy in step until `stop` completes,
/// reporting each applied revision as router `router`. Returns once it
/// stopped reporting.
pub async fn run(
    registry: Registry,
    mut sync: HaproxySync,
    router: RouterReporter,
    stop: impl std::future::Future<Output = ()>,
) {
    let watcher = registry.watcher();
    let mut tables = watcher.subscribe();
    tokio::pin!(stop);
    let mut backoff = DRAIN_POLL;
    let mut failing = false;
    loop {
        let table = tables.borrow_and_update().clone();
        let mut wait = sync.options.resync;
        // Nothing read yet: an empty table would remove every server.
        if table.lists > 0 {
            match sync.apply(&table).await {
                Ok(pass) => {
                    if failing {
                        tracing::info!("HAProxy is in step again");
                        failing = false;
                    }
                    backoff = DRAIN_POLL;
                    if pass.draining > 0 {
                        wait = DRAIN_POLL;
                    }
                    if let Err(error) = router.report(table.revision).await {
                        tracing::warn!(%error, revision = table.revision, "cannot report the applied revision");
                        wait = wait.min(backoff);
                    } else {
                        tracing::debug!(revision = table.revision, ?pass, "applied");
                    }
                }
                Err(error) => {
                    tracing::error!(%error, retry_in = ?backoff, "HAProxy is not in step with the registry");
                    failing = true;
                    wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        tokio::select! {
            changed = tables.changed() => {
                if changed.is_err() {
                    // The watcher is gone: nothing new will come, resync on time.
                    tokio::time::sleep(wait).await;
                }
            }
            () = tokio::time::sleep(wait) => {}
            () = &mut stop => break,
        }
    }
    match router.stop().await {
        Ok(_) => tracing::info!("stopped; no longer reporting as a router"),
        Err(error) => {
            tracing::warn!(%error, "stopped; the router's report goes when its lease expires")
        }
    }
}
