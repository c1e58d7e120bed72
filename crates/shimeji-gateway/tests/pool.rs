//! The gateway's connections to an instance: kept alive from one request
//! to the next, and replaced, without failing a request, when the instance
//! closed an idle one.

mod common;

use common::*;
use shimeji::registry::{Registry, Route};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A plain HTTP/1.1 instance answering `{}` to every request; it counts
/// the connections it accepted, and closes a connection left idle for
/// `idle_close` when given.
struct Counting {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Counting {
    async fn start(idle_close: Option<Duration>) -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let read = match idle_close {
                            Some(idle) => {
                                match tokio::time::timeout(idle, stream.read(&mut buf)).await {
                                    Ok(read) => read,
                                    Err(_) => return, // idle: closed
                                }
                            }
                            None => stream.read(&mut buf).await,
                        };
                        let n = match read {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        head.extend_from_slice(&buf[..n]);
                        // GETs only: a request ends with its head.
                        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            head.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Counting {
            address,
            connections,
            task,
        }
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn requests_reuse_one_connection_and_a_closed_idle_one_is_replaced() {
    let registry = Registry::memory();
    let keeps = Counting::start(None).await;
    let routes = vec![Route::new("GET", "/kept/{id}")];
    let _kept = registry
        .register(record("kept", "kept-1", keeps.address, routes), TTL)
        .await
        .expect("register");
    let closes = Counting::start(Some(Duration::from_millis(50))).await;
    let routes = vec![Route::new("GET", "/closed/{id}")];
    let _closed = registry
        .register(record("closed", "closed-1", closes.address, routes), TTL)
        .await
        .expect("register");
    let (_gateway, base) = gateway(&registry, settings()).await;
    let http = client();

    // One request at a time: one connection serves them all.
    for n in 0..20 {
        let (status, _) = get_json(&http, &format!("{base}/kept/{n}")).await;
        assert_eq!(status, 200);
    }
    assert_eq!(keeps.connections.load(Ordering::SeqCst), 1);

    // The instance closes each connection once idle: every request after
    // a pause gets a new one, and none fails.
    for n in 0..5 {
        let (status, _) = get_json(&http, &format!("{base}/closed/{n}")).await;
        assert_eq!(status, 200, "request {n}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(closes.connections.load(Ordering::SeqCst), 5);
}
