//! Keep-alive clients sending GETs and POSTs through a load balancer, each
//! outcome counted: what a rolling upgrade must not disturb.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// GETs answered 2xx, by the version that answered.
    pub versions: BTreeMap<String, u64>,
    /// POSTs answered 2xx: their ids.
    pub posted: Vec<u64>,
    /// Answers other than 2xx: status and body.
    pub non_2xx: Vec<(u16, String)>,
    /// Requests that got no answer.
    pub errors: Vec<String>,
}

impl Outcomes {
    fn merge(&mut self, other: Outcomes) {
        for (version, count) in other.versions {
            *self.versions.entry(version).or_default() += count;
        }
        self.posted.extend(other.posted);
        self.non_2xx.extend(other.non_2xx);
        self.errors.extend(other.errors);
    }

    /// Requests answered 2xx.
    pub fn ok(&self) -> u64 {
        self.versions.values().sum::<u64>() + self.posted.len() as u64
    }
}

/// Clients running until [`stop`](Self::stop).
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Outcomes>>,
}

/// An HTTP client whose TLS settings (never used: plain HTTP) are handed
/// in, as this package's reqwest has no TLS provider of its own; one
/// keep-alive connection.
pub fn client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

impl Load {
    /// Starts `clients` clients against `base` (`http://host:port`), each
    /// alternating `GET /notes/version` and `POST /notes`, or only GETs
    /// when `posts` is false.
    pub fn start(base: &str, clients: usize, posts: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let next_id = Arc::new(AtomicU64::new(1));
        let clients = (0..clients)
            .map(|_| {
                let (stop, next_id, base) = (stop.clone(), next_id.clone(), base.to_string());
                tokio::spawn(async move {
                    let client = client();
                    let mut outcomes = Outcomes::default();
                    let mut post = false;
                    while !stop.load(Ordering::SeqCst) {
                        if post {
                            let id = next_id.fetch_add(1, Ordering::SeqCst);
                            let sent = client
                                .post(format!("{base}/notes"))
                                .header("content-type", "application/json")
                                .body(json!({ "id": id }).to_string())
                                .send()
                                .await;
                            match sent {
                                Ok(r) if r.status().is_success() => outcomes.posted.push(id),
                                Ok(r) => outcomes.non_2xx.push((
                                    r.status().as_u16(),
                                    r.text().await.unwrap_or_default(),
                                )),
                                Err(e) => outcomes.errors.push(format!("POST {id}: {e:?}")),
                            }
                        } else {
                            match client.get(format!("{base}/notes/version")).send().await {
                                Ok(r) if r.status().is_success() => {
                                    let body: Value = serde_json::from_slice(
                                        &r.bytes().await.unwrap_or_default(),
                                    )
                                    .unwrap_or_default();
                                    let version =
                                        body["version"].as_str().unwrap_or("?").to_string();
                                    *outcomes.versions.entry(version).or_default() += 1;
                                }
                                Ok(r) => outcomes.non_2xx.push((
                                    r.status().as_u16(),
                                    r.text().await.unwrap_or_default(),
                                )),
                                Err(e) => outcomes.errors.push(format!("GET: {e:?}")),
                            }
                        }
                        post = posts && !post;
                    }
                    outcomes
                })
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops the clients; what they saw.
    pub async fn stop(self) -> Outcomes {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Outcomes::default();
        for client in self.clients {
            all.merge(client.await.expect("a client task"));
        }
        all
    }
}
