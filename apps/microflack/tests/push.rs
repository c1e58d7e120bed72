//! The push service with a stock Socket.IO client (socket.io-client 4, in
//! Node.js): `ping_user`, `post_message`, `expired_token` to the offending
//! socket only, `updated_model` to everyone, disconnect → offline; over
//! long polling upgraded to WebSocket, and WebSocket alone.

mod common;

use common::{App, Auth, Backend, Data};
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_io_client_chats() {
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client");
    assert!(
        client.join("node_modules/socket.io-client").is_dir(),
        "the Socket.IO client is not installed: run `bash apps/microflack/tests/client/install.sh` \
         (Node.js and npm; `bash .ci/run` does it)"
    );
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

    let run = tokio::process::Command::new("node")
        .arg(client.join("push.js"))
        .arg(&app.base)
        .arg(&token)
        .arg(id.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the client finished")
        .expect("node runs (install Node.js)");
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
    assert_eq!(list["messages"][0]["source"], "hi *there*");
    assert_eq!(
        list["messages"].as_array().map(Vec::len),
        Some(1),
        "the refused post was not stored"
    );
    app.stop().await;
}
