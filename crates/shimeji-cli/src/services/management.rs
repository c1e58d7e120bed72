//! The management HTTP API: where to ask it, and the vhost's queues as it
//! lists them.

use super::broker::Broker;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{header, redirect, StatusCode};
use serde_json::Value;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for the management API to accept the connection, and
/// then for each read of its answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// The management API's port over plain HTTP.
const MANAGEMENT_PORT: u16 = 15672;

/// The management API's usual port over HTTPS.
pub const MANAGEMENT_TLS_PORT: u16 = 15671;

/// What a path segment keeps as it is (RFC 3986's unreserved characters);
/// everything else is percent-encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Where the management API is asked, and how.
#[derive(Debug, PartialEq)]
pub struct Management {
    tls: bool,
    host: String,
    port: u16,
}

impl Management {
    /// Parses `http://host[:port]` or `https://host[:port]` (a trailing `/`
    /// allowed; no path, no userinfo: the credentials come from the broker URI).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("--management-url must start with http:// or https://".into());
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
            return Err(
                "--management-url is scheme://host[:port] only, e.g. https://rabbit:15671".into(),
            );
        }
        let default_port = if tls {
            MANAGEMENT_TLS_PORT
        } else {
            MANAGEMENT_PORT
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or("--management-url has an unclosed `[`")?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| format!("--management-url has a bad port `{p}`"))?,
            None => default_port,
        };
        Ok(Management {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// The management API to ask for `broker` when the user named none:
    /// HTTPS for an amqps:// broker, plain HTTP only when the broker is on
    /// this machine, and none otherwise (the password would cross the
    /// network in clear).
    pub fn derive(broker: &Broker) -> Option<Self> {
        if broker.tls {
            Some(Management {
                tls: true,
                host: broker.host.clone(),
                port: MANAGEMENT_TLS_PORT,
            })
        } else if broker.is_local() {
            Some(Management {
                tls: false,
                host: broker.host.clone(),
                port: MANAGEMENT_PORT,
            })
        } else {
            None
        }
    }

    /// `scheme://host:port`, with brackets around an IPv6 host.
    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The vhost's queues and their consumer counts from the management API,
/// asked with the broker URI's user and password. The error completes
/// "the management API …" and never holds the password.
pub async fn queues(
    broker: &Broker,
    management: &Management,
) -> Result<Vec<(String, u64)>, String> {
    let place = format!("at {}", management.url());
    let url = format!(
        "{}/api/queues/{}?columns=name,consumers",
        management.url(),
        utf8_percent_encode(&broker.vhost, PATH_SEGMENT)
    );
    let response = client()
        .map_err(|e| format!("{place} {e}"))?
        .get(url)
        .basic_auth(&broker.user, Some(&broker.password))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("{place} {}", unanswered(&e)))?;
    match response.status() {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => {
            return Err(format!(
                "{place} refused the broker URI's user and password"
            ))
        }
        StatusCode::NOT_FOUND => {
            return Err(format!("{place} knows no virtual host `{}`", broker.vhost))
        }
        other => return Err(format!("{place} answered HTTP {}", other.as_u16())),
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("{place} failed: {}", cause(&e)))?;
    let queues: Vec<Value> =
        serde_json::from_slice(&body).map_err(|e| format!("{place} sent bad JSON: {e}"))?;
    Ok(queues
        .iter()
        .filter_map(|q| {
            Some((
                q.get("name")?.as_str()?.to_string(),
                q.get("consumers").and_then(Value::as_u64).unwrap_or(0),
            ))
        })
        .collect())
}

/// The HTTP client: HTTPS checks the server's certificate against the
/// webpki roots; no proxy (the request goes where the URL says), no
/// redirect (the credentials go nowhere else). The error completes
/// "at <url> …".
fn client() -> Result<reqwest::Client, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("cannot set TLS up: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(HTTP_TIMEOUT)
        .read_timeout(HTTP_TIMEOUT)
        .redirect(redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot set the HTTP client up: {}", cause(&e)))
}

/// Why a request got no answer; completes "at <url> …".
fn unanswered(e: &reqwest::Error) -> String {
    if e.is_dns() {
        format!("cannot be resolved: {}", cause(e))
    } else if e.is_connect() && (e.is_timeout() || no_tcp_connection(e)) {
        "is not reachable (the management plugin is not enabled)".to_string()
    } else if e.is_timeout() {
        format!("did not answer within {}s", HTTP_TIMEOUT.as_secs())
    } else {
        format!("failed: {}", cause(e))
    }
}

/// The TCP connection was refused (rather than, say, the TLS handshake
/// failing).
fn no_tcp_connection(e: &reqwest::Error) -> bool {
    causes(e)
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            )
        })
}

/// The innermost cause of `e`, which says what went wrong (reqwest's own
/// message repeats the URL, already said).
fn cause(e: &reqwest::Error) -> String {
    causes(e)
        .last()
        .map_or_else(|| e.to_string(), ToString::to_string)
}

/// What caused `e`, outermost first.
fn causes(e: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(e.source(), |&cause| cause.source())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn credentials_never_cross_the_network_in_clear_unless_named() {
        let derive = |uri: &str| Management::derive(&Broker::parse(uri).unwrap());
        // amqps: the management API over HTTPS.
        assert_eq!(
            derive("amqps://u:p@rabbit.internal/"),
            Some(Management {
                tls: true,
                host: "rabbit.internal".into(),
                port: 15671
            })
        );
        // amqp on this machine: plain HTTP, the password stays here.
        assert_eq!(
            derive("amqp://u:p@127.0.0.1:5672/"),
            Some(Management {
                tls: false,
                host: "127.0.0.1".into(),
                port: 15672
            })
        );
        // amqp elsewhere: not asked unless named.
        assert_eq!(derive("amqp://u:p@rabbit.internal/"), None);
        assert_eq!(
            Management::parse("http://rabbit.internal:8080/").unwrap(),
            Management {
                tls: false,
                host: "rabbit.internal".into(),
                port: 8080
            }
        );
        assert_eq!(Management::parse("https://[::1]").unwrap().port, 15671);
        assert!(Management::parse("ftp://x").is_err());
        assert!(Management::parse("http://u:p@x").is_err());
    }

    #[tokio::test]
    async fn https_sends_no_cleartext() {
        // A plain TCP server records the first bytes it gets.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = socket.read(&mut buf).unwrap();
            buf[..n].to_vec()
        });
        let broker = Broker::parse("amqps://app:s3cret@localhost/").unwrap();
        let management = Management::parse(&format!("https://localhost:{port}")).unwrap();
        let err = queues(&broker, &management).await.unwrap_err();
        let first = server.join().unwrap();
        assert_eq!(
            first.first(),
            Some(&0x16),
            "a TLS handshake record: {first:?}"
        );
        let text = String::from_utf8_lossy(&first);
        assert!(
            !text.contains("GET") && !text.to_lowercase().contains("authorization"),
            "{text}"
        );
        // "app:s3cret" in base64.
        assert!(!text.contains("YXBwOnMzY3JldA=="), "{text}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn vhosts_are_one_path_segment() {
        let encode = |s| utf8_percent_encode(s, PATH_SEGMENT).to_string();
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("shimeji-test_1.a~b"), "shimeji-test_1.a~b");
        assert_eq!(encode("shop prod/é"), "shop%20prod%2F%C3%A9");
    }

    fn plain(port: u16) -> Management {
        Management {
            tls: false,
            host: "127.0.0.1".into(),
            port,
        }
    }

    /// A one-request HTTP server that sends `response` and hands back the
    /// request's head.
    fn fake_management(response: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            socket.write_all(response.as_bytes()).unwrap();
            String::from_utf8(request).unwrap()
        });
        (port, handle)
    }

    /// The value of the request's header `name`, whatever its case.
    fn header<'a>(request: &'a str, name: &str) -> Option<&'a str> {
        request.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    #[tokio::test]
    async fn reads_the_management_api() {
        let (port, server) = fake_management(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
             37\r\n[{\"name\":\"rpc-greeter\",\"consumers\":2},{\"name\":\"evt-x\"}]\r\n0\r\n\r\n",
        );
        let broker = Broker::parse("amqp://guest:guest@127.0.0.1/").unwrap();
        let queues = queues(&broker, &plain(port)).await.unwrap();
        assert_eq!(queues, vec![("rpc-greeter".into(), 2), ("evt-x".into(), 0)]);
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /api/queues/%2F?columns=name,consumers "),
            "{request}"
        );
        assert_eq!(
            header(&request, "authorization"),
            Some("Basic Z3Vlc3Q6Z3Vlc3Q="),
            "{request}"
        );
        assert_eq!(
            header(&request, "accept"),
            Some("application/json"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn management_errors_say_why() {
        let broker = Broker::parse("amqp://u:p@127.0.0.1/").unwrap();
        let (port, _server) = fake_management("HTTP/1.1 401 Unauthorized\r\n\r\n");
        let err = queues(&broker, &plain(port)).await.unwrap_err();
        assert!(err.contains("refused"), "{err}");
        let (port, _server) =
            fake_management("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        let err = queues(&broker, &plain(port)).await.unwrap_err();
        assert!(err.contains("knows no virtual host `/`"), "{err}");
        // A redirect is not followed: the credentials go nowhere else.
        let (port, _server) = fake_management(
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n",
        );
        let err = queues(&broker, &plain(port)).await.unwrap_err();
        assert!(err.ends_with("answered HTTP 302"), "{err}");
        let (port, _server) = fake_management("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
        let err = queues(&broker, &plain(port)).await.unwrap_err();
        assert!(err.contains("sent bad JSON"), "{err}");
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = queues(&broker, &plain(port)).await.unwrap_err();
        assert!(err.contains("not reachable"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_api_times_out() {
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let broker = Broker::parse("amqp://u:p@127.0.0.1/").unwrap();
        let err = queues(&broker, &plain(port)).await.unwrap_err();
        assert!(err.ends_with("did not answer within 3s"), "{err}");
    }
}
