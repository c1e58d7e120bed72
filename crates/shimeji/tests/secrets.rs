//! The password in `AMQP_URI` never reaches a log line, an error or a
//! `Debug`: every line logged (at TRACE) while a start fails is captured and
//! searched for each piece of a password holding `/`, `@`, `%2F` and `:`.

mod support;

use shimeji::prelude::*;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// A password a generator could make, and its pieces between the special
/// characters: none may be shown.
const PASSWORD: &str = "Sx1/Ty2@Uz3%2FVw4:Xq5";
const PIECES: [&str; 5] = ["Sx1", "Ty2", "Uz3", "Vw4", "Xq5"];

/// Everything logged in this test binary, from every thread.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(log.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per binary");
        log
    })
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&captured().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

fn assert_hidden(what: &str, text: &str) {
    for piece in PIECES {
        assert!(
            !text.contains(piece),
            "{what} shows `{piece}` of the password:\n{text}"
        );
    }
}

#[derive(Dependencies)]
struct Quiet;

#[service(name = "secrets_quiet")]
impl Quiet {
    #[rpc]
    async fn ping(&self) -> u8 {
        1
    }
}

/// Starts a runner on `uri`; the start must fail. Returns what it showed.
async fn failing_start(uri: &str) -> String {
    let config = Config::new().set("AMQP_URI", uri);
    tracing::info!(config = ?config, "starting with");
    let err = match ServiceRunner::with_config(config)
        .service(Quiet)
        .start()
        .await
    {
        Ok(running) => {
            running.stop().await;
            panic!("the start on {uri:?} was expected to fail");
        }
        Err(err) => err,
    };
    tracing::error!(%err, ?err, "start failed");
    format!("{err}\n{err:?}\n{err:#?}")
}

#[tokio::test]
async fn a_failing_start_never_shows_the_password() {
    captured();
    // A closed port: the password holds every character that breaks a
    // naive parser, as generated passwords do.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let uris = [
        format!("amqp://app:{PASSWORD}@127.0.0.1:{port}/"),
        format!("amqps://app:{PASSWORD}@127.0.0.1:{port}/vh"),
        format!("amqp://app:{PASSWORD}@127.0.0.1:{port}"),
    ];
    for uri in &uris {
        let shown = failing_start(uri).await;
        assert!(
            shown.contains("app:***@"),
            "the user stays, the password goes: {shown}"
        );
        assert_hidden("the start error", &shown);
    }

    // The broker itself refuses a wrong password that reaches it (one with
    // `:` and `%2F`, which a URI parser takes whole).
    support::require_broker();
    let wrong = "Sx1:Ty2%2FUz3Vw4Xq5";
    let shown = failing_start(&format!("amqp://guest:{wrong}@{}/%2F", support::BROKER)).await;
    assert_hidden("the start error", &shown);

    let log = log_text();
    assert!(
        log.contains("start failed"),
        "the capture works, the failures were logged:\n{log}"
    );
    assert!(log.contains("starting with"), "{log}");
    assert_hidden("the log", &log);
}
