//! Runs MicroFlack for a test: every service (or some) on a free loopback
//! port, on SQLite in a fresh folder or on fresh PostgreSQL databases, with
//! a recorder of the `updated_model` events; and an HTTP client for it.
#![allow(dead_code)]

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shimeji::prelude::*;
use shimeji::{Config, RunningServices, ServiceRunner};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SECRET: &str = "test-secret-not-for-production";

/// Which database the services use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates a `sqlite` and a `postgres` test of `$name(Backend)`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )*};
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{:08x}", std::process::id(), fastrand::u32(..))
}

fn psql(sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| format!("cannot run psql ({e}): install postgresql-client"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The data of one test: a folder, and PostgreSQL databases made for it;
/// removed when dropped.
pub struct Data {
    pub folder: PathBuf,
    pub databases: Vec<(String, String)>,
}

impl Data {
    pub fn new(backend: Backend) -> Data {
        let folder = std::env::temp_dir().join(unique("microflack-test"));
        std::fs::create_dir_all(&folder).expect("temp folder");
        let mut databases = Vec::new();
        if backend == Backend::Postgres {
            for key in [
                "USERS_DATABASE_URL",
                "MESSAGES_DATABASE_URL",
                "TOKENS_DATABASE_URL",
            ] {
                let name = unique(&format!(
                    "mf_{}",
                    key.split('_').next().unwrap_or("x").to_lowercase()
                ));
                psql(&format!("CREATE DATABASE {name}")).unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is needed on 127.0.0.1:5432 (trust auth, user postgres): {e}\n\
                         start it with `bash .ci/run` or `service postgresql start`"
                    )
                });
                databases.push((key.to_string(), name));
            }
        }
        Data { folder, databases }
    }

    /// A connection pool to the database of config key `key`
    /// (`USERS_DATABASE_URL`, …), to change rows behind the services' backs.
    pub async fn pool(&self, key: &str, file: &str) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = self
            .databases
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, n)| format!("postgres://postgres@127.0.0.1:5432/{n}"))
            .unwrap_or_else(|| format!("sqlite://{}", self.folder.join(file).display()));
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("database reachable")
    }

    /// A configuration for MicroFlack on this data.
    pub fn config(&self) -> Config {
        let mut config = Config::new()
            .set("WEB_SERVER_ADDRESS", "127.0.0.1:0")
            .set("MICROFLACK_DATA", self.folder.display().to_string())
            .set("JWT_SECRET_KEY", SECRET)
            .set("LINK_PREVIEWS_ALLOW_PRIVATE", "1");
        for (key, name) in &self.databases {
            config = config.set(
                key.as_str(),
                format!("postgres://postgres@127.0.0.1:5432/{name}"),
            );
        }
        config
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
        for (_, name) in &self.databases {
            let _ = psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// Records every `updated_model` event (a test service).
#[derive(Dependencies)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<Value>>>,
}

#[service(name = "recorder")]
impl Recorder {
    #[event_handler("users", "updated_model", handler_type = "broadcast")]
    async fn user(&self, event: Value) {
        self.seen.lock().unwrap().push(event);
    }

    #[event_handler("messages", "updated_model", handler_type = "broadcast")]
    async fn message(&self, event: Value) {
        self.seen.lock().unwrap().push(event);
    }
}

/// MicroFlack running for a test.
pub struct App {
    pub running: Option<RunningServices>,
    pub base: String,
    pub http: reqwest::Client,
    pub events: Arc<Mutex<Vec<Value>>>,
}

/// How a request authenticates.
pub enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

impl App {
    /// Every service on `config`.
    pub async fn start(config: Config) -> App {
        App::start_services(config, &microflack::SERVICES).await
    }

    /// The named services on `config`, with the recorder.
    pub async fn start_services(config: Config, services: &[&str]) -> App {
        let events = Arc::new(Mutex::new(Vec::new()));
        let runner = microflack::add_services(ServiceRunner::with_config(config), services)
            .service(Recorder {
                seen: events.clone(),
            });
        let running = runner.start().await.expect("MicroFlack starts");
        let base = running
            .web_address()
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        App {
            running: Some(running),
            base,
            http: reqwest::Client::new(),
            events,
        }
    }

    pub async fn stop(mut self) {
        // Idle keep-alive connections of the client close first.
        self.http = reqwest::Client::new();
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    /// A request; the body parsed as JSON (`Null` when empty, a string when
    /// not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        request = match auth {
            Auth::None => request,
            Auth::Basic(u, p) => request.basic_auth(u, Some(p)),
            Auth::Bearer(t) => request.bearer_auth(t),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, value)
    }

    pub async fn get(&self, path: &str, auth: Auth<'_>) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::GET, path, auth, None).await;
        (s, v)
    }

    /// Registers a user; returns its id.
    pub async fn register(&self, nickname: &str, password: &str) -> i64 {
        let (status, _, body) = self
            .call(
                Method::POST,
                "/api/users",
                Auth::None,
                Some(json!({ "nickname": nickname, "password": password })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().expect("an id")
    }

    /// Logs in; returns the token.
    pub async fn login(&self, nickname: &str, password: &str) -> String {
        let (status, _, body) = self
            .call(
                Method::POST,
                "/api/tokens",
                Auth::Basic(nickname, password),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().expect("a token").to_string()
    }

    /// Posts a message; returns it.
    pub async fn post(&self, token: &str, source: &str) -> Value {
        let (status, _, body) = self
            .call(
                Method::POST,
                "/api/messages",
                Auth::Bearer(token),
                Some(json!({ "source": source })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// The recorded `updated_model` events of `class`.
    pub fn events_of(&self, class: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["class"] == class)
            .cloned()
            .collect()
    }
}

/// Waits until `check` holds, up to `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
