//! The etcd backend (feature `etcd`): `REGISTRY=etcd://host:2379[,host:2379…]`.
//!
//! Keys, leases and watches map one to one onto etcd's v3 API (crate
//! `etcd-client`). Every request carries etcd's "require leader" metadata,
//! so a member cut off from the quorum refuses it (and ends its watches)
//! instead of serving a stale view; the client then tries another member.
//! Unary requests time out after [`REQUEST_TIMEOUT`]; an HTTP/2 keep-alive
//! notices a dead connection under a silent watch.

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions, WatchResponse,
};
use futures::future::BoxFuture;
use futures::StreamExt;
use std::future::Future;
use std::time::Duration;

use super::{Change, ChangeStream, KeyValue, LeaseId, RegistryBackend, RegistryError, Revision};

/// How long one unary request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 keep-alive ping interval on the connection. etcd refuses pings
/// more often than every 5 s (`--grpc-keepalive-min-time`): it answers a
/// few with GOAWAY `too_many_pings` and drops the connection, every watch
/// with it.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long a keep-alive ping may go unanswered before the connection is
/// taken for dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A registry on an etcd cluster. Cheap to clone; clones share the
/// connection.
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// The endpoints of `etcd://` URL's rest (`host:port[,host:port…]`).
pub(super) fn endpoints(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim_end_matches('/');
    let endpoints: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if endpoints.is_empty() {
        return Err("names no endpoint (expected `etcd://host:port[,host:port…]`)".into());
    }
    if rest.contains('@') {
        return Err("credentials in the URL are not supported".into());
    }
    for endpoint in &endpoints {
        let valid = endpoint
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid || endpoint.contains('/') {
            return Err(format!("endpoint `{endpoint}` is not `host:port`"));
        }
    }
    Ok(endpoints)
}

impl EtcdRegistry {
    /// Connects to the etcd members at `endpoints` (`host:port` each). The
    /// connection is made lazily: an unreachable cluster fails the first
    /// request, not this.
    pub async fn connect(endpoints: Vec<String>) -> Result<Self, RegistryError> {
        let options = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(unreachable)?;
        Ok(EtcdRegistry { client, endpoints })
    }

    /// The members it connects to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }
}

fn unreachable(error: etcd_client::Error) -> RegistryError {
    RegistryError::Unreachable(error.to_string())
}

/// Whether etcd said the lease does not exist ("etcdserver: requested
/// lease not found", gRPC status NotFound).
fn lease_not_found(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.message().contains("lease not found"))
}

/// `call` within [`REQUEST_TIMEOUT`]: etcd's answer, or unreachable.
async fn timed_raw<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<Result<T, etcd_client::Error>, RegistryError> {
    tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| {
            RegistryError::Unreachable(format!("etcd did not answer within {REQUEST_TIMEOUT:?}"))
        })
}

/// `call` within [`REQUEST_TIMEOUT`]; any failure is unreachable.
async fn timed<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, RegistryError> {
    timed_raw(call).await?.map_err(unreachable)
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))
}

fn to_revision(revision: i64) -> Revision {
    u64::try_from(revision).unwrap_or(0)
}

/// The changes of one watch response; an error when etcd cancelled it.
fn changes(response: &WatchResponse) -> Result<Vec<Change>, RegistryError> {
    if response.canceled() {
        if response.compact_revision() > 0 {
            return Err(RegistryError::Compacted {
                compact_revision: to_revision(response.compact_revision()),
            });
        }
        return Err(RegistryError::Unreachable(format!(
            "etcd cancelled the watch: {}",
            response.cancel_reason()
        )));
    }
    Ok(response
        .events()
        .iter()
        .filter_map(|event| {
            let kv = event.kv()?;
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let revision = to_revision(kv.mod_revision());
            Some(match event.event_type() {
                EventType::Put => Change::Put(KeyValue {
                    key,
                    value: kv.value().to_vec(),
                    mod_revision: revision,
                }),
                EventType::Delete => Change::Delete { key, revision },
            })
        })
        .collect())
}

impl RegistryBackend for EtcdRegistry {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, RegistryError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
            let granted = timed(client.lease_grant(seconds, None)).await?;
            Ok(granted.id())
        })
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<bool, RegistryError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            // Opening the keep-alive stream sends one renewal and reads its
            // answer: a TTL of 0 (the lease is gone) is an error there.
            match timed_raw(client.lease_keep_alive(lease)).await? {
                Ok(_) => Ok(true),
                Err(etcd_client::Error::LeaseKeepAliveError(reason))
                    if reason.contains("lease not found") =>
                {
                    Ok(false)
                }
                Err(error) => Err(unreachable(error)),
            }
        })
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<Revision, RegistryError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            match timed_raw(client.lease_revoke(lease)).await? {
                Ok(response) => Ok(revision_of(response.header())),
                Err(error) if lease_not_found(&error) => Err(RegistryError::LeaseLost(lease)),
                Err(error) => Err(unreachable(error)),
            }
        })
    }

    fn put(
        &self,
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> BoxFuture<'_, Result<Revision, RegistryError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let options = PutOptions::new().with_lease(lease);
            match timed_raw(client.put(key, value, Some(options))).await? {
                Ok(response) => Ok(revision_of(response.header())),
                Err(error) if lease_not_found(&error) => Err(RegistryError::LeaseLost(lease)),
                Err(error) => Err(unreachable(error)),
            }
        })
    }

    fn list(
        &self,
        prefix: String,
    ) -> BoxFuture<'_, Result<(Vec<KeyValue>, Revision), RegistryError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let options = GetOptions::new().with_prefix();
            let response = timed(client.get(prefix, Some(options))).await?;
            let kvs = response
                .kvs()
                .iter()
                .map(|kv| KeyValue {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: kv.value().to_vec(),
                    mod_revision: to_revision(kv.mod_revision()),
                })
                .collect();
            Ok((kvs, revision_of(response.header())))
        })
    }

    fn watch(
        &self,
        prefix: String,
        from: Revision,
    ) -> BoxFuture<'_, Result<ChangeStream, RegistryError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let start = i64::try_from(from.max(1)).unwrap_or(i64::MAX);
            let options = WatchOptions::new().with_prefix().with_start_revision(start);
            let stream = timed(client.watch(prefix, Some(options))).await?;
            let changes = futures::stream::unfold(Some(stream), |stream| async move {
                let mut stream = stream?;
                loop {
                    match stream.message().await {
                        Ok(Some(response)) => match changes(&response) {
                            Ok(batch) if batch.is_empty() => continue,
                            Ok(batch) => return Some((Ok(batch), Some(stream))),
                            Err(error) => return Some((Err(error), None)),
                        },
                        Ok(None) => {
                            let error = RegistryError::Unreachable("etcd ended the watch".into());
                            return Some((Err(error), None));
                        }
                        Err(error) => return Some((Err(unreachable(error)), None)),
                    }
                }
            });
            Ok(changes.boxed())
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let revision = i64::try_from(revision).unwrap_or(i64::MAX);
            match timed_raw(client.compact(revision, None)).await? {
                Ok(_) => Ok(()),
                // Compacted already: nothing to do.
                Err(error) if error.to_string().contains("compacted") => Ok(()),
                Err(error) => Err(unreachable(error)),
            }
        })
    }
}
