//! MicroFlack's page in headless Chromium: the `microflack` binary serves
//! it (SQLite in a temp folder, a fixed JWT secret, link previews of local
//! pages allowed) and `tests/browser/chat.mjs` drives two or three users
//! through it with playwright-core — over Socket.IO, and with the polling
//! fallback (`NO_SOCKETIO`). Screenshots land in
//! `<target>/browser-screenshots/<mode>/`. And, without a browser, the
//! page's files as served: types, cache headers, the CSP, the polling flag.

mod common;

use common::{Backend, Data};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const INSTALL: &str = "run `bash apps/microflack/tests/browser/install.sh` \
(Chromium from Debian's `chromium` package, Node.js, and playwright-core from npm; \
`bash .ci/run` does it)";

/// The scenarios share the machine's two cores: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// `<target>/browser-screenshots/<mode>`: the target folder is
/// `CARGO_TARGET_DIR` (relative to the workspace) or the workspace's
/// `target`.
fn screenshots(mode: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                workspace.join(t)
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    target.join("browser-screenshots").join(mode)
}

/// What must be installed; a clear failure otherwise.
fn check_installed() {
    assert!(
        chromium().is_file(),
        "Chromium is not installed at {}: {INSTALL}",
        chromium().display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "Node.js (`node`) is not installed: {INSTALL}"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: {INSTALL}"
    );
}

/// The `microflack` binary, killed (by its pid) however the test ends.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on a free loopback port; returns it and its URL.
fn start(data: &Path, polling: bool) -> (Server, String) {
    let log = data.join("microflack.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_microflack"));
    command
        .env_remove("AMQP_URI")
        .env_remove("REGISTRY")
        .env("WEB_SERVER_ADDRESS", "127.0.0.1:0")
        .env("MICROFLACK_DATA", data)
        .env("JWT_SECRET_KEY", "browser-test-secret")
        .env("LINK_PREVIEWS_ALLOW_PRIVATE", "true")
        .stdout(Stdio::piped())
        .stderr(log_file);
    if polling {
        command.env("NO_SOCKETIO", "1");
    } else {
        command.env_remove("NO_SOCKETIO");
    }
    let mut server = Server {
        child: command.spawn().expect("microflack starts"),
        log,
    };
    let stdout = server.child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("microflack prints its URL");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| {
            panic!(
                "no URL in {line:?}; log:\n{}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            )
        })
        .to_string();
    (server, url)
}

/// Runs the scenario of `mode` against a fresh MicroFlack.
async fn scenario(mode: &str) {
    check_installed();
    let _turn = ONE_AT_A_TIME.lock().await;
    let data = std::env::temp_dir().join(format!(
        "microflack-browser-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&data).expect("temp folder");
    let (server, url) = start(&data, mode == "polling");
    let shots = screenshots(mode);
    let run = tokio::process::Command::new("node")
        .arg(browser_dir().join("chat.mjs"))
        .arg(&url)
        .arg(&shots)
        .arg(mode)
        .env("CHROMIUM", chromium())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser scenario finished within 180 s")
        .unwrap_or_else(|e| panic!("cannot run node: {e}; {INSTALL}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let passed = output.status.success() && stdout.lines().any(|l| l == "PASS");
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    assert!(
        passed,
        "the browser scenario failed ({}); screenshots in {}\nserver log:\n{log}",
        output.status,
        shots.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_over_socket_io() {
    scenario("socketio").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_by_polling() {
    scenario("polling").await;
}

/// The page and its files over HTTP, with Socket.IO on and off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_page_and_its_files() {
    let data = Data::new(Backend::Sqlite);
    let app = common::App::start_services(data.config(), &["ui"]).await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.base)).send();
    let page = get("/").await.expect("GET /");
    assert_eq!(page.status(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let csp = header(&page, "content-security-policy");
    assert!(
        csp.contains("script-src 'self' 'sha256-") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = page.text().await.expect("the page");
    assert!(html.contains("<title>MicroFlack!</title>"));
    assert!(html.contains(r#"data-socketio="true""#));
    let bundle = html
        .split('"')
        .find(|s| s.starts_with("/static/vendor/socket.io-"))
        .expect("the import map names the bundle")
        .to_string();

    for (path, kind, cache) in [
        ("/static/app.js", "text/javascript", "no-cache"),
        ("/static/views.js", "text/javascript", "no-cache"),
        ("/static/styles.css", "text/css", "no-cache"),
        (bundle.as_str(), "text/javascript", "immutable"),
    ] {
        let r = get(path).await.expect("a file");
        assert_eq!(r.status(), 200, "{path}");
        assert!(header(&r, "content-type").starts_with(kind), "{path}");
        assert!(header(&r, "cache-control").contains(cache), "{path}");
        assert!(!r.text().await.unwrap_or_default().is_empty(), "{path}");
    }
    let missing = get("/static/nothing.js").await.expect("a 404");
    assert_eq!(missing.status(), 404);
    app.stop().await;

    // NO_SOCKETIO: the page polls.
    let app = common::App::start_services(data.config().set("NO_SOCKETIO", "1"), &["ui"]).await;
    let html = app
        .http
        .get(format!("{}/", app.base))
        .send()
        .await
        .expect("GET /")
        .text()
        .await
        .expect("the page");
    assert!(html.contains(r#"data-socketio="false""#));
    app.stop().await;
}
