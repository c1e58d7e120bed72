//! The `microflack` binary: prints the URL it serves, runs all five
//! services or the `--services` named, says when it generated the JWT
//! secret and never prints a secret.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Ends the child (by its pid) however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &std::path::Path, services: &str, secret: Option<&str>) -> (Running, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_microflack"));
    command
        .args(["--services", services])
        .env_remove("AMQP_URI")
        .env_remove("REGISTRY")
        .env_remove("RUST_LOG")
        .env("WEB_SERVER_ADDRESS", "127.0.0.1:0")
        .env("MICROFLACK_DATA", data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match secret {
        Some(s) => command.env("JWT_SECRET_KEY", s),
        None => command.env_remove("JWT_SECRET_KEY"),
    };
    let mut child = Running(command.spawn().expect("microflack starts"));
    let stdout = child.0.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("a line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    (child, url)
}

fn stderr_of(mut child: Running) -> String {
    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut text = String::new();
    if let Some(mut stderr) = child.0.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}

#[tokio::test]
async fn serves_everything_and_prints_no_secret() {
    let data = std::env::temp_dir().join(format!(
        "microflack-bin-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let secret = "a-secret-that-must-not-show";
    let (child, url) = start(&data, "all", Some(secret));
    let page = http.get(format!("{url}/")).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("MicroFlack!"));
    let r = http
        .post(format!("{url}/api/users"))
        .json(&serde_json::json!({"nickname": "ada", "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{url}/api/tokens"))
        .basic_auth("ada", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        http.get(format!("{url}/api/messages"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let polling = http
        .get(format!("{url}/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert!(polling.text().await.unwrap().starts_with("0{\"sid\""));
    let log = stderr_of(child);
    assert!(!log.contains(secret), "the secret is never printed:\n{log}");
    assert!(data.join("users.sqlite").exists() && data.join("messages.sqlite").exists());

    // A subset; and a generated secret is said, not shown.
    let (child, url) = start(&data, "users,tokens", None);
    assert_eq!(
        http.get(format!("{url}/api/users"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http
        .get(format!("{url}/api/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let log = stderr_of(child);
    assert!(log.contains("generated a random one"), "{log}");
    let _ = std::fs::remove_dir_all(&data);
}
