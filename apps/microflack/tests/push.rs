//! The push service with stock Socket.IO clients — socket.io-client 4 (in
//! Node.js) and python-socketio 5: `ping_user`, `post_message`,
//! `expired_token` to the offending socket only, `updated_model` to
//! everyone, disconnect → offline; over long polling upgraded to WebSocket,
//! and WebSocket alone.

mod common;

use common::{App, Auth, Backend, Data};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client")
}

const INSTALL: &str = "run `bash apps/microflack/tests/client/install.sh` (Node.js, npm and Python; `bash .ci/run` does it)";

/// Runs a client script against a fresh MicroFlack; checks what it left.
async fn chat_with(program: PathBuf, script: &str, source: &str, html: &str) {
    let data = Data::new(Backend::Sqlite);
    let app = App::start(data.config()).await;
    let id = app.register("susan", "dog").await;
    let token = app.login("susan", "dog").await;
    app.call(
        reqwest::Method::DELETE,
        "/api/users/me",
        Auth::Bearer(&token),
        None,
    )
    .await;

    let run = tokio::process::Command::new(&program)
        .arg(client_dir().join(script))
        .arg(&app.base)
        .arg(&token)
        .arg(id.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the client finished")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("PASS"),
        "client failed:\n{stdout}\n{stderr}"
    );
    // The disconnect left the user offline; the message is there over REST.
    let (_, user) = app.get(&format!("/api/users/{id}"), Auth::None).await;
    assert_eq!(user["online"], false);
    let (_, list) = app.get("/api/messages", Auth::None).await;
    let messages = list["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        messages.len(),
        1,
        "only the accepted post is stored: {list}"
    );
    assert_eq!(messages[0]["source"], source);
    assert_eq!(messages[0]["html"], html);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_client_4_chats() {
    assert!(
        client_dir().join("node_modules/socket.io-client").is_dir(),
        "socket.io-client is not installed: {INSTALL}"
    );
    chat_with("node".into(), "push.js", "hi *there*", "hi <em>there</em>").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_socketio_5_chats() {
    let python = client_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "python-socketio is not installed: {INSTALL}"
    );
    chat_with(python, "push.py", "from *python*", "from <em>python</em>").await;
}
