//! A runner's place in the service registry: its services register once
//! they are ready, and deregister first when they stop, waiting until the
//! routers applied it before the web server closes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError, DEFAULT_DEREGISTER_DELAY};
use crate::container::StartError;
use crate::registry::{host_name, InstanceRecord, Registration, Registry, RegistryError, Route};

/// What a runner's web server serves, as the registrar publishes it.
#[derive(Debug, Default)]
pub(super) struct WebServed {
    /// The address it is bound to.
    pub(super) bound: Option<SocketAddr>,
    /// `(service, method, path template)` of every route.
    pub(super) routes: Vec<(&'static str, &'static str, &'static str)>,
    /// The services whose RPC answers on `/ws`.
    pub(super) websocket: Vec<&'static str>,
    /// The address the operations server is bound to.
    pub(super) ops: Option<SocketAddr>,
}

/// The registry a runner uses and its registrations there.
pub(super) struct Registrar {
    registry: Registry,
    /// The runner's services and their versions, in the order added.
    services: Vec<(&'static str, &'static str)>,
    registrations: Vec<Registration>,
}

/// The address routers are told: the one configured, else the bound one
/// (with the host name for an unspecified IP).
fn advertise(configured: Option<&str>, bound: Option<SocketAddr>, host: &str) -> Option<String> {
    match (configured, bound) {
        (Some(address), _) => Some(address.to_string()),
        (None, Some(bound)) if bound.ip().is_unspecified() => {
            Some(format!("{host}:{}", bound.port()))
        }
        (None, bound) => bound.map(|b| b.to_string()),
    }
}

impl Registrar {
    pub(super) fn new(registry: Registry, services: Vec<(&'static str, &'static str)>) -> Self {
        Registrar {
            registry,
            services,
            registrations: Vec::new(),
        }
    }

    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(super) fn registrations(&self) -> &[Registration] {
        &self.registrations
    }

    /// The records of the runner's services.
    fn records(
        &self,
        config: &Config,
        web: &WebServed,
    ) -> Result<Vec<InstanceRecord>, ConfigError> {
        let host = host_name();
        let pid = std::process::id();
        let instance_id = match config.get::<String>("instance_id")? {
            Some(id) => id,
            None => {
                let uuid = crate::context::new_uuid().simple().to_string();
                format!("{host}-{pid}-{}", &uuid[..8])
            }
        };
        let version = config.get::<String>("SERVICE_VERSION")?;
        let sticky = config.get::<bool>("sticky_sessions")?.unwrap_or(false);
        let advertise_host = config.get::<String>("registry_advertise_address")?;
        let advertised = advertise(advertise_host.as_deref(), web.bound, &host);
        // The operations server is reached on the advertised host too.
        let ops_host = advertise_host
            .as_deref()
            .map(|a| a.rsplit_once(':').map_or(a, |(h, _)| h));
        let ops = web.ops.map(|bound| match ops_host {
            Some(h) => format!("{h}:{}", bound.port()),
            None => advertise(None, Some(bound), &host).unwrap_or_default(),
        });
        Ok(self
            .services
            .iter()
            .map(|&(service, crate_version)| {
                let mut record = InstanceRecord::new(service, instance_id.clone());
                record.version = version.clone().unwrap_or_else(|| {
                    if crate_version.is_empty() {
                        "0.0.0"
                    } else {
                        crate_version
                    }
                    .to_string()
                });
                record.routes = web
                    .routes
                    .iter()
                    .filter(|(s, _, _)| *s == service)
                    .map(|(_, method, path)| Route::new(*method, *path))
                    .collect();
                record.websocket = web.websocket.contains(&service);
                record.ops = ops.clone();
                if !record.routes.is_empty() || record.websocket {
                    record.http = advertised.clone();
                    record.sticky = sticky;
                }
                record
            })
            .collect())
    }

    /// Registers every service of the runner (it is ready: serving, its
    /// listeners bound).
    pub(super) async fn register(
        &mut self,
        config: &Config,
        web: &WebServed,
    ) -> Result<(), StartError> {
        let ttl = config.registry_ttl();
        for record in self.records(config, web)? {
            let registration = self
                .registry
                .register(record, ttl)
                .await
                .map_err(|e| start_error(&e))?;
            self.registrations.push(registration);
        }
        Ok(())
    }

    /// Deregisters every service, then waits until every router applied
    /// it (at most `deregister_timeout`), or `deregister_delay` when no
    /// router reports. Only an instance that serves HTTP waits: routers
    /// route nothing else to it.
    pub(super) async fn withdraw(&mut self, config: &Config) {
        if self.registrations.is_empty() {
            return;
        }
        let serves_http = self.registrations.iter().any(|r| r.record().http.is_some());
        let started = Instant::now();
        let deregistered =
            futures::future::join_all(self.registrations.drain(..).map(Registration::deregister))
                .await;
        let mut barrier = None;
        let mut failed = false;
        for outcome in deregistered {
            match outcome {
                Ok(revision) => barrier = barrier.max(Some(revision)),
                Err(error) => {
                    failed = true;
                    tracing::warn!(%error, "cannot deregister: the record goes when its lease expires");
                }
            }
        }
        if !serves_http {
            return;
        }
        let delay = config
            .deregister_delay()
            .unwrap_or(if self.registry.is_remote() {
                DEFAULT_DEREGISTER_DELAY
            } else {
                Duration::ZERO
            });
        let Some(revision) = barrier.filter(|_| !failed) else {
            tokio::time::sleep(delay).await;
            return;
        };
        let timeout = config.deregister_timeout();
        match self.registry.wait_applied(revision, timeout).await {
            Ok(applied) if applied.routers == 0 => {
                tracing::info!(
                    revision,
                    ?delay,
                    "deregistered; no router reports: waiting the fixed delay"
                );
                tokio::time::sleep(delay).await;
            }
            Ok(applied) if applied.all_applied => {
                tracing::info!(revision, routers = applied.routers, waited = ?started.elapsed(), "deregistered; every router applied it");
            }
            Ok(applied) => {
                let behind: Vec<String> = applied.behind.iter().map(|r| r.id.clone()).collect();
                tracing::warn!(
                    revision,
                    ?behind,
                    ?timeout,
                    "deregistered; routers did not apply it in time"
                );
            }
            Err(error) => {
                tracing::warn!(revision, %error, "deregistered; cannot read the routers: waiting the fixed delay");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The start error for a registry failure.
pub(super) fn start_error(error: &RegistryError) -> StartError {
    match error {
        RegistryError::BadUrl { .. } | RegistryError::BadName(_) => {
            StartError::Config(ConfigError {
                key: "REGISTRY".into(),
                message: error.to_string(),
            })
        }
        _ => StartError::Connect(format!("service registry: {error}")),
    }
}
