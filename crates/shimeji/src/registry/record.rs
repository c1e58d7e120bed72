//! What an instance publishes about itself, and where it is kept.

use serde::{Deserialize, Serialize};

/// The key prefix under which everything of the registry lives.
pub const KEY_PREFIX: &str = "/shimeji/v1/";

/// The prefix of the instance records: `/shimeji/v1/instances/`.
pub const INSTANCES_PREFIX: &str = "/shimeji/v1/instances/";

/// The prefix of the routers' applied revisions: `/shimeji/v1/routers/`.
pub const ROUTERS_PREFIX: &str = "/shimeji/v1/routers/";

/// A registry revision: one counter for the whole registry, bumped by
/// every write (etcd's store revision). A deregistration's revision is the
/// barrier routers must reach.
pub type Revision = u64;

/// One HTTP route an instance serves, as its `#[http]` entrypoint declares
/// it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Route {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path template, parameters written `{name}` (axum and matchit
    /// syntax): `/users/{id}`.
    pub path: String,
}

impl Route {
    /// A route for `method` and `path`.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Route {
            method: method.into(),
            path: path.into(),
        }
    }
}

/// What one running instance of a service publishes, under its lease.
///
/// It is stored as JSON at `/shimeji/v1/instances/<service>/<instance_id>`.
/// Readers ignore fields they do not know, and fields added later have
/// defaults, so records of mixed versions can live side by side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The service's name.
    pub service: String,
    /// The instance: unique in the fleet for as long as it runs. All
    /// services of one runner (one process) share it.
    pub instance_id: String,
    /// The service's version (`SERVICE_VERSION`, else its crate's version).
    pub version: String,
    /// The host it runs on (its host name).
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// The `host:port` routers send its HTTP requests to; `None` when it
    /// serves no HTTP.
    #[serde(default)]
    pub http: Option<String>,
    /// The routes its `#[http]` entrypoints declare.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The `host:port` of its operations server (`METRICS_ADDRESS`:
    /// `/health/ready`, `/metrics`), when it runs one. `shimeji upgrade`
    /// probes readiness and error rates there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<String>,
    /// Whether it serves the WebSocket hub on `/ws`.
    #[serde(default)]
    pub websocket: bool,
    /// Whether a client must stay on the instance it first reached
    /// (sessions kept in process, such as Socket.IO's polling transport).
    #[serde(default)]
    pub sticky: bool,
    /// When it registered first, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_at_ms: u64,
}

impl InstanceRecord {
    /// A record for instance `instance_id` of `service` on this host and
    /// process, with no HTTP and version `0.0.0`.
    pub fn new(service: impl Into<String>, instance_id: impl Into<String>) -> Self {
        InstanceRecord {
            service: service.into(),
            instance_id: instance_id.into(),
            version: "0.0.0".into(),
            host: host_name(),
            pid: std::process::id(),
            http: None,
            routes: Vec::new(),
            ops: None,
            websocket: false,
            sticky: false,
            started_at_ms: now_ms(),
        }
    }

    /// The key it is stored under.
    pub fn key(&self) -> String {
        instance_key(&self.service, &self.instance_id)
    }

    /// Whether it serves `method` on path template `path`.
    pub fn serves(&self, method: &str, path: &str) -> bool {
        self.routes
            .iter()
            .any(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
    }
}

/// The applied revision a router reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterState {
    /// The router's id.
    pub id: String,
    /// The registry revision whose table it routes with: every change up
    /// to it is applied.
    pub applied_revision: Revision,
}

/// The key of instance `instance_id` of `service`.
pub fn instance_key(service: &str, instance_id: &str) -> String {
    format!("{INSTANCES_PREFIX}{service}/{instance_id}")
}

/// The key of router `id`.
pub fn router_key(id: &str) -> String {
    format!("{ROUTERS_PREFIX}{id}")
}

/// The service and instance id an instance key names, if it is one.
pub fn parse_instance_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(INSTANCES_PREFIX)?;
    let (service, id) = rest.split_once('/')?;
    (!service.is_empty() && !id.is_empty() && !id.contains('/')).then_some((service, id))
}

/// Whether `name` can be a key segment (a service name, an instance or
/// router id): not empty, no `/`, no whitespace or control characters.
pub(crate) fn valid_segment(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

/// This host's name: `HOSTNAME`, else the kernel's, else `localhost`.
pub fn host_name() -> String {
    if let Ok(name) = std::env::var("HOSTNAME") {
        if !name.trim().is_empty() {
            return name.trim().to_string();
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let key = instance_key("users", "a1");
        assert_eq!(key, "/shimeji/v1/instances/users/a1");
        assert_eq!(parse_instance_key(&key), Some(("users", "a1")));
        assert_eq!(parse_instance_key("/shimeji/v1/instances/users"), None);
        assert_eq!(parse_instance_key("/shimeji/v1/routers/g"), None);
        assert_eq!(router_key("g1"), "/shimeji/v1/routers/g1");
    }

    #[test]
    fn records_of_older_writers_decode() {
        let old = r#"{"service":"s","instance_id":"i","version":"1","host":"h","pid":7,"extra":1}"#;
        let record: InstanceRecord = serde_json::from_str(old).expect("decodes");
        assert_eq!(record.http, None);
        assert!(record.routes.is_empty());
        assert!(!record.sticky);
    }

    #[test]
    fn segments_are_checked() {
        assert!(valid_segment("users-1.a_b"));
        assert!(!valid_segment(""));
        assert!(!valid_segment("a/b"));
        assert!(!valid_segment("a b"));
    }

    #[test]
    fn serves_matches_method_and_template() {
        let mut record = InstanceRecord::new("users", "i");
        record.routes.push(Route::new("GET", "/users/{id}"));
        assert!(record.serves("get", "/users/{id}"));
        assert!(!record.serves("POST", "/users/{id}"));
    }
}
