//! The routing table: method + path → the instances that serve it, built
//! from the registry's table with matchit (the router under axum), from
//! the route templates the instances registered. No route file.
//!
//! - A route's pool holds every instance whose record lists the route
//!   (method and template); an instance that does not list it (an older or
//!   newer version during a roll) is never picked for it.
//! - Instances whose record says `websocket` serve `GET /ws`.
//! - `HEAD` goes where `GET` goes unless a `HEAD` route exists; an
//!   `OPTIONS` request (a CORS preflight) goes to a service of the path.
//! - A service with no instance left keeps its last routes, with an empty
//!   pool: its requests get a 503 (it is down) rather than a 404 (it does
//!   not exist). Once any instance of the service registers again, its
//!   routes are the ones its instances list.
//! - Parameter names do not matter: `/users/{id}` and `/users/{uid}` are
//!   one route. Templates that matchit cannot hold side by side (a
//!   parameter and a catch-all at one place) keep the first, in key order,
//!   and log the other.

use http::Method;
use shimeji::registry::{Revision, Table};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tower::retry::budget::TpsBudget;

use crate::metrics::{Metrics, ServiceMetrics};
use crate::upstream::{Upstream, Upstreams};

/// The path of the WebSocket hub of instances that serve one.
pub(crate) const WEBSOCKET_PATH: &str = "/ws";

/// The instances that serve one route, and what their requests count on.
#[derive(Debug)]
pub(crate) struct Pool {
    /// The service (the first by name when several serve the route).
    pub(crate) service: String,
    /// Its counters.
    pub(crate) metrics: Arc<ServiceMetrics>,
    /// Its retry budget.
    pub(crate) budget: Arc<TpsBudget>,
    /// The instances; empty when the service has none up.
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    /// Whether a client must stay on one instance.
    pub(crate) sticky: bool,
}

/// One path template and its methods.
#[derive(Debug)]
struct PathEntry {
    methods: Vec<(Method, Arc<Pool>)>,
}

/// What a request's method and path lead to.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// The route's pool (maybe empty).
    Found(&'a Arc<Pool>),
    /// The path is served, but not with this method: the methods that are.
    MethodNotAllowed(String),
    /// No route.
    NotFound,
}

/// A routing table, built from one registry table.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    router: matchit::Router<usize>,
    entries: Vec<PathEntry>,
    /// The registry revision it was built from.
    pub(crate) revision: Revision,
    /// Whether it was built from a table the registry was listed for
    /// (false for the empty table a gateway starts with).
    pub(crate) ready: bool,
    /// Whether the registry was reachable when it was built.
    pub(crate) connected: bool,
    /// The instances it routes to.
    pub(crate) instances: usize,
}

impl RouteTable {
    /// Where `method` on `path` goes.
    pub(crate) fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let Ok(found) = self.router.at(path) else {
            return Lookup::NotFound;
        };
        let Some(entry) = self.entries.get(*found.value) else {
            return Lookup::NotFound;
        };
        let find = |m: &Method| entry.methods.iter().find(|(k, _)| k == m).map(|(_, p)| p);
        if let Some(pool) = find(method) {
            return Lookup::Found(pool);
        }
        if *method == Method::HEAD {
            if let Some(pool) = find(&Method::GET) {
                return Lookup::Found(pool);
            }
        }
        if *method == Method::OPTIONS {
            if let Some((_, pool)) = entry.methods.first() {
                return Lookup::Found(pool);
            }
        }
        let allow: Vec<&str> = entry.methods.iter().map(|(m, _)| m.as_str()).collect();
        Lookup::MethodNotAllowed(allow.join(", "))
    }

    /// The number of path templates.
    pub(crate) fn paths(&self) -> usize {
        self.entries.len()
    }
}

/// Builds routing tables, keeping what must outlive one table: the
/// upstreams (in-flight counts, ejections), each service's budget and
/// counters, and the last routes of each service.
pub(crate) struct Builder {
    upstreams: Upstreams,
    budgets: HashMap<String, Arc<TpsBudget>>,
    /// Each service's routes, as its instances last listed them.
    known: BTreeMap<String, BTreeSet<(String, String)>>,
    metrics: Arc<Metrics>,
    budget: (Duration, u32, f32),
}

/// A route: its normalised template and method.
type RouteKey = (String, String);

/// The instances of one service on one route.
#[derive(Default)]
struct Serving {
    upstreams: Vec<Arc<Upstream>>,
    sticky: bool,
}

impl Builder {
    /// A builder whose services get a retry budget of `retry_ratio` of
    /// their requests plus `min_per_sec` per second, over `window`.
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        window: Duration,
        min_per_sec: u32,
        retry_ratio: f32,
    ) -> Builder {
        Builder {
            upstreams: Upstreams::default(),
            budgets: HashMap::new(),
            known: BTreeMap::new(),
            metrics,
            budget: (window, min_per_sec, retry_ratio),
        }
    }

    /// The routing table of `table`.
    pub(crate) fn build(&mut self, table: &Table) -> RouteTable {
        let mut upstreams = Upstreams::default();
        // route → service → its instances on it
        let mut routes: BTreeMap<RouteKey, BTreeMap<String, Serving>> = BTreeMap::new();
        let mut listed: BTreeMap<String, BTreeSet<RouteKey>> = BTreeMap::new();
        for record in table.instances.values() {
            let mut own: Vec<RouteKey> = record
                .routes
                .iter()
                .filter_map(|r| {
                    let method = Method::from_bytes(r.method.to_ascii_uppercase().as_bytes());
                    match (method, normalise(&r.path)) {
                        (Ok(m), Some(path)) => Some((path, m.as_str().to_string())),
                        _ => {
                            tracing::warn!(service = %record.service, instance = %record.instance_id,
                                method = %r.method, path = %r.path, "route not understood: ignored");
                            None
                        }
                    }
                })
                .collect();
            if record.websocket {
                own.push((WEBSOCKET_PATH.to_string(), "GET".to_string()));
            }
            listed
                .entry(record.service.clone())
                .or_default()
                .extend(own.iter().cloned());
            let upstream = record.http.as_deref().and_then(|address| {
                let found = self
                    .upstreams
                    .get(&mut upstreams, &record.instance_id, address);
                if found.is_none() {
                    tracing::warn!(service = %record.service, instance = %record.instance_id,
                        address, "HTTP address is not host:port: instance ignored");
                }
                found
            });
            for key in own {
                let serving = routes
                    .entry(key)
                    .or_default()
                    .entry(record.service.clone())
                    .or_default();
                serving.sticky |= record.sticky;
                if let Some(upstream) = &upstream {
                    if !serving.upstreams.iter().any(|u| Arc::ptr_eq(u, upstream)) {
                        serving.upstreams.push(upstream.clone());
                    }
                }
            }
        }
        // Services with no instance left keep their last routes, empty.
        for (service, keys) in &self.known {
            if listed.contains_key(service) {
                continue;
            }
            for key in keys {
                routes
                    .entry(key.clone())
                    .or_default()
                    .entry(service.clone())
                    .or_default();
            }
        }
        for (service, keys) in listed {
            self.known.insert(service, keys);
        }
        self.upstreams = upstreams;

        let mut by_path: BTreeMap<String, Vec<(Method, Arc<Pool>)>> = BTreeMap::new();
        for ((path, method), services) in routes {
            let Ok(method) = Method::from_bytes(method.as_bytes()) else {
                continue;
            };
            let pool = self.pool(services);
            by_path
                .entry(path)
                .or_default()
                .push((method, Arc::new(pool)));
        }
        let mut built = RouteTable {
            revision: table.revision,
            ready: table.lists > 0,
            connected: table.connected,
            instances: self.upstreams.len(),
            ..RouteTable::default()
        };
        for (path, methods) in by_path {
            match built.router.insert(path.clone(), built.entries.len()) {
                Ok(()) => built.entries.push(PathEntry { methods }),
                Err(error) => {
                    tracing::warn!(%path, %error, "route conflicts with another: ignored")
                }
            }
        }
        self.metrics.instances.set(gauge(built.instances));
        self.metrics.routes.set(gauge(built.entries.len()));
        self.metrics
            .revision
            .set(i64::try_from(built.revision).unwrap_or(i64::MAX));
        self.metrics.tables.inc();
        built
    }

    /// One route's pool from the services serving it.
    fn pool(&mut self, services: BTreeMap<String, Serving>) -> Pool {
        let service = services.keys().next().cloned().unwrap_or_default();
        if services.len() > 1 {
            let names: Vec<&String> = services.keys().collect();
            tracing::debug!(?names, "one route served by several services: one pool");
        }
        let mut upstreams = Vec::new();
        let mut sticky = false;
        for serving in services.into_values() {
            sticky |= serving.sticky;
            for u in serving.upstreams {
                if !upstreams.iter().any(|x| Arc::ptr_eq(x, &u)) {
                    upstreams.push(u);
                }
            }
        }
        let (window, min_per_sec, ratio) = self.budget;
        let budget = self
            .budgets
            .entry(service.clone())
            .or_insert_with(|| Arc::new(TpsBudget::new(window, min_per_sec, ratio)))
            .clone();
        Pool {
            metrics: self.metrics.service(&service),
            service,
            budget,
            upstreams,
            sticky,
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The template with its parameters renamed by position (`{p0}`,
/// `{*p1}`), so that templates differing only in names are one route;
/// `None` when it does not start with `/` or has an unclosed brace.
fn normalise(template: &str) -> Option<String> {
    if !template.starts_with('/') {
        return None;
    }
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    let mut index = 0;
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push_str("{{");
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push_str("}}");
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next()? {
                        '}' => break,
                        c => name.push(c),
                    }
                }
                let star = if name.starts_with('*') { "*" } else { "" };
                out.push_str(&format!("{{{star}p{index}}}"));
                index += 1;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shimeji::registry::{InstanceRecord, Route};

    fn record(service: &str, id: &str, port: u16, routes: &[(&str, &str)]) -> InstanceRecord {
        let mut r = InstanceRecord::new(service, id);
        r.http = Some(format!("127.0.0.1:{port}"));
        r.routes = routes.iter().map(|(m, p)| Route::new(*m, *p)).collect();
        r
    }

    fn table(records: Vec<InstanceRecord>, revision: Revision) -> Table {
        let mut t = Table {
            revision,
            connected: true,
            lists: 1,
            ..Table::default()
        };
        for r in records {
            t.instances
                .insert((r.service.clone(), r.instance_id.clone()), r);
        }
        t
    }

    fn builder() -> Builder {
        Builder::new(Arc::new(Metrics::new()), Duration::from_secs(10), 10, 0.2)
    }

    fn ids(lookup: Lookup<'_>) -> Vec<String> {
        match lookup {
            Lookup::Found(pool) => {
                let mut ids: Vec<_> = pool
                    .upstreams
                    .iter()
                    .map(|u| u.instance_id.clone())
                    .collect();
                ids.sort();
                ids
            }
            other => panic!("not found: {other:?}"),
        }
    }

    #[test]
    fn normalises_parameter_names() {
        assert_eq!(
            normalise("/users/{id}/posts/{*rest}").as_deref(),
            Some("/users/{p0}/posts/{*p1}")
        );
        assert_eq!(
            normalise("/a/{{literal}}").as_deref(),
            Some("/a/{{literal}}")
        );
        assert_eq!(normalise("/a/{open"), None);
        assert_eq!(normalise("relative"), None);
    }

    #[test]
    fn routes_by_method_and_template() {
        let mut b = builder();
        let t = b.build(&table(
            vec![
                record(
                    "users",
                    "u1",
                    1,
                    &[("GET", "/users/{id}"), ("POST", "/users")],
                ),
                record("users", "u2", 2, &[("GET", "/users/{uid}")]),
                record("notes", "n1", 3, &[("get", "/notes/{id}")]),
            ],
            7,
        ));
        assert_eq!(t.revision, 7);
        assert_eq!(ids(t.lookup(&Method::GET, "/users/3")), ["u1", "u2"]);
        assert_eq!(ids(t.lookup(&Method::POST, "/users")), ["u1"]);
        assert_eq!(ids(t.lookup(&Method::HEAD, "/users/3")), ["u1", "u2"]);
        assert_eq!(ids(t.lookup(&Method::GET, "/notes/1")), ["n1"]);
        assert!(matches!(
            t.lookup(&Method::GET, "/nothing"),
            Lookup::NotFound
        ));
        assert!(matches!(
            t.lookup(&Method::GET, "/users/3/x"),
            Lookup::NotFound
        ));
        match t.lookup(&Method::DELETE, "/users") {
            Lookup::MethodNotAllowed(allow) => assert_eq!(allow, "POST"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_service_with_no_instance_left_is_unavailable_not_unknown() {
        let mut b = builder();
        b.build(&table(
            vec![record("users", "u1", 1, &[("GET", "/users")])],
            1,
        ));
        let t = b.build(&table(vec![], 2));
        match t.lookup(&Method::GET, "/users") {
            Lookup::Found(pool) => {
                assert!(pool.upstreams.is_empty());
                assert_eq!(pool.service, "users");
            }
            other => panic!("{other:?}"),
        }
        // Back with another route set: the old route is gone.
        let t = b.build(&table(
            vec![record("users", "u2", 2, &[("GET", "/v2/users")])],
            3,
        ));
        assert!(matches!(t.lookup(&Method::GET, "/users"), Lookup::NotFound));
        assert_eq!(ids(t.lookup(&Method::GET, "/v2/users")), ["u2"]);
    }

    #[test]
    fn websocket_instances_serve_ws_and_upstreams_persist() {
        let mut b = builder();
        let mut r = record("chat", "c1", 1, &[]);
        r.websocket = true;
        r.sticky = true;
        let t1 = b.build(&table(vec![r.clone()], 1));
        let Lookup::Found(p1) = t1.lookup(&Method::GET, WEBSOCKET_PATH) else {
            panic!("no /ws")
        };
        assert!(p1.sticky);
        let t2 = b.build(&table(vec![r], 2));
        let Lookup::Found(p2) = t2.lookup(&Method::GET, WEBSOCKET_PATH) else {
            panic!("no /ws")
        };
        assert!(Arc::ptr_eq(&p1.upstreams[0], &p2.upstreams[0]));
        assert!(Arc::ptr_eq(&p1.budget, &p2.budget));
    }

    #[test]
    fn instances_without_http_or_with_conflicting_routes_do_not_break_the_table() {
        let mut b = builder();
        let mut silent = record("users", "u0", 1, &[("GET", "/users")]);
        silent.http = None;
        let t = b.build(&table(
            vec![
                silent,
                record("a", "a1", 2, &[("GET", "/x/{id}")]),
                record("b", "b1", 3, &[("GET", "/x/{*rest}")]),
            ],
            1,
        ));
        match t.lookup(&Method::GET, "/users") {
            Lookup::Found(pool) => assert!(pool.upstreams.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.lookup(&Method::GET, "/x/1"), Lookup::Found(_)));
    }
}
