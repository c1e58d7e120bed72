//! An instance of the `notes` HTTP service in a process of its own: the
//! test binary started again to run its ignored test `instance`, which
//! serves `notes` on a free loopback port and registers it in the
//! registry the environment names (the runner's own registration); on
//! SIGTERM the runner stops in the order a router needs: readiness 503,
//! deregister, wait until every router applied it, close gracefully.
//! What the runner logs of that goes to stdout, for the tests to read.
//!
//! | variable | meaning |
//! |---|---|
//! | `SHIMEJI_TEST_INSTANCE` | the registry URL (required) |
//! | `SHIMEJI_TEST_VERSION` | its version, answered by `GET /notes/version` (default `1`) |
//! | `SHIMEJI_TEST_POSTS` | a directory where each `POST /notes` appends its id, a file per instance |
//! | `SHIMEJI_TEST_BROKEN` | `1`: `GET /notes/version` fails with a 500 |

use serde_json::{json, Value};
use shimeji::http::{Json, Status};
use shimeji::prelude::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The registry URL; set, the test binary serves an instance.
pub const REGISTRY_ENV: &str = "SHIMEJI_TEST_INSTANCE";
/// Its version.
pub const VERSION_ENV: &str = "SHIMEJI_TEST_VERSION";
/// Where POSTs are written down.
pub const POSTS_ENV: &str = "SHIMEJI_TEST_POSTS";
/// `1`: GETs fail.
pub const BROKEN_ENV: &str = "SHIMEJI_TEST_BROKEN";

/// The service under test. Its readiness and metrics are served on its
/// own address too, for `upgrade` to read.
#[derive(Default, Dependencies)]
struct Notes {
    version: String,
    broken: bool,
    posts: Option<Mutex<std::fs::File>>,
    ready: Arc<AtomicBool>,
}

#[shimeji::service(name = "notes")]
impl Notes {
    /// The version that answers. A broken one fails with a 500 that its
    /// metrics count as an error (a panic here).
    #[http(GET, "/notes/version")]
    async fn version(&self) -> Json<Value> {
        assert!(!self.broken, "this version is broken");
        Json(json!({ "version": self.version, "pid": std::process::id() }))
    }

    /// Writes the posted id down.
    #[http(POST, "/notes")]
    async fn add(&self, Json(body): Json<Value>) -> (Status, Json<Value>) {
        if let (Some(file), Some(id)) = (&self.posts, body.get("id")) {
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(file, "{id}");
        }
        (Status::CREATED, Json(json!({ "id": body.get("id") })))
    }

    /// 200 while serving, 503 once stopping.
    #[http(GET, "/health/ready")]
    async fn ready(&self) -> (Status, Json<Value>) {
        if self.ready.load(Ordering::SeqCst) {
            (Status::OK, Json(json!({ "ready": true })))
        } else {
            (Status::SERVICE_UNAVAILABLE, Json(json!({ "ready": false })))
        }
    }

    /// The process's metrics.
    #[http(GET, "/metrics")]
    async fn metrics(&self) -> String {
        shimeji::metrics::render()
    }
}

/// The body of the ignored test `instance`: serves until SIGTERM.
pub fn serve_from_env() {
    let url = std::env::var(REGISTRY_ENV).unwrap_or_else(|_| {
        panic!("{REGISTRY_ENV} names no registry: this is not a test to run by itself")
    });
    let version = std::env::var(VERSION_ENV).unwrap_or_else(|_| "1".into());
    let broken = std::env::var(BROKEN_ENV).is_ok_and(|v| v == "1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The runner's registry and stop steps, on stdout.
    tracing_subscriber::fmt()
        .with_env_filter("warn,shimeji::runner=info")
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .init();
    runtime.block_on(async move {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("listen for SIGTERM");
        shimeji::metrics::enable();
        let posts = std::env::var(POSTS_ENV).ok().map(|dir| {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(&dir).join(format!("{}.txt", std::process::id())))
                .expect("posts file");
            Mutex::new(file)
        });
        let ready = Arc::new(AtomicBool::new(true));
        let config = Config::new()
            .set("WEB_SERVER_ADDRESS", "127.0.0.1:0")
            .set("REGISTRY", url)
            .set("registry_ttl", 3)
            .set("SERVICE_VERSION", version.clone());
        let running = ServiceRunner::with_config(config)
            .service(Notes {
                version,
                broken,
                posts,
                ready: ready.clone(),
            })
            .start()
            .await
            .expect("the instance starts");
        let registration = running
            .registrations()
            .iter()
            .find(|r| r.record().service == "notes")
            .expect("notes registered");
        let record = registration.record();
        println!(
            "registered {} {} {}",
            record.instance_id,
            record.http.as_deref().expect("an HTTP address"),
            registration.revision()
        );
        sigterm.recv().await;
        ready.store(false, Ordering::SeqCst);
        running.stop().await;
        println!("stopped");
    });
}

/// The arguments that make the test binary run its test `instance`.
pub fn instance_args() -> [&'static str; 5] {
    [
        "instance",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// An instance started by a test, killed (if still running) when dropped.
pub struct Instance {
    /// Its process.
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Its instance id.
    pub id: String,
    /// Its HTTP address.
    pub address: String,
    /// The revision of its registration.
    pub revision: u64,
}

impl Instance {
    /// Starts an instance of `version` registering in `registry`, and waits
    /// until it registered.
    pub fn start(registry: &str, version: &str, posts: Option<&Path>) -> Instance {
        let mut command = Command::new(std::env::current_exe().expect("this test binary"));
        command
            .args(instance_args())
            .env(REGISTRY_ENV, registry)
            .env(VERSION_ENV, version)
            .env_remove(BROKEN_ENV)
            .stdout(Stdio::piped());
        if let Some(dir) = posts {
            command.env(POSTS_ENV, dir);
        }
        let mut child = command.spawn().expect("start an instance");
        let stdout = child.stdout.take().expect("its stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut instance = Instance {
            child,
            lines,
            id: String::new(),
            address: String::new(),
            revision: 0,
        };
        let line = instance.wait_for("registered ", Duration::from_secs(20));
        let fields: Vec<&str> = line.split_whitespace().collect();
        instance.id = fields[1].to_string();
        instance.address = fields[2].to_string();
        instance.revision = fields[3].parse().expect("a revision");
        instance
    }

    /// Waits for a line holding `prefix`; the line from there on.
    pub fn wait_for(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                // The first line follows libtest's `test instance ... `.
                Ok(line) if line.contains(prefix) => {
                    return line[line.find(prefix).unwrap_or(0)..].to_string()
                }
                Ok(_) => {}
                Err(e) => panic!("the instance did not print `{prefix}…` ({e:?})"),
            }
        }
    }

    /// Sends SIGTERM and waits until it exited; the line where its runner
    /// said it deregistered.
    pub fn terminate(&mut self) -> String {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let line = self.wait_for("deregistered", Duration::from_secs(20));
        let status = self.child.wait().expect("the instance exits");
        assert!(status.success(), "the instance exited with {status}");
        line
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh temporary directory.
pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shimeji-{what}-{}-{}",
        std::process::id(),
        super::haproxy::free_port()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
