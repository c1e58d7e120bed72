//! `shimeji services`: which services the broker serves.
//!
//! AMQP has no way to list queues, so this asks RabbitMQ itself: first its
//! management HTTP API, when that plugin is enabled, then `rabbitmqctl` on
//! this machine.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// `shimeji services --help`.
pub const LONG_ABOUT: &str = "\
List the services the broker serves: the queues named `rpc-<service>` (the
queue Nameko and shimeji services consume RPC requests from) that have at least
one consumer, on the broker's virtual host. One name per line, sorted.

AMQP itself cannot list queues, so this relies on RabbitMQ's own tools:

  1. the management HTTP API, <management URL>/api/queues/<vhost>, with the
     user and password of the broker URI, when the management plugin is
     enabled (`rabbitmq-plugins enable rabbitmq_management`). The URL is
     `--management-url` when given (e.g. https://rabbit.internal:15671, or
     http://… if you accept that the password crosses the network in clear);
     for an amqps:// broker, https://<broker host>:15671 (TLS, the broker's
     certificate checked against the webpki roots); for an amqp:// broker on
     this machine (localhost, 127.x, ::1), http://<host>:15672, since the
     password never leaves the machine. The password is never sent over
     cleartext HTTP to another host unless you named that URL: for an
     amqp:// broker elsewhere, pass --management-url;
  2. otherwise `rabbitmqctl list_queues -p <vhost> name consumers`, run on
     this machine: it lists the queues of the local RabbitMQ node, so it fits
     a broker that runs here, and needs the rights rabbitmqctl needs (the
     node's Erlang cookie, usually root or the rabbitmq user).

When neither works, it says why and exits 3.";

/// How long to wait for the management API.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// The management API's port over plain HTTP.
const MANAGEMENT_PORT: u16 = 15672;

/// The management API's usual port over HTTPS.
const MANAGEMENT_TLS_PORT: u16 = 15671;

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

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The parts of an AMQP URI the listing needs.
#[derive(PartialEq)]
pub struct Broker {
    tls: bool,
    user: String,
    password: String,
    host: String,
    vhost: String,
}

impl Broker {
    /// Parses `amqp://user:password@host:port/vhost`; RabbitMQ's defaults
    /// (guest, guest, vhost `/`) fill what is missing. The userinfo ends at
    /// the last `@`, whatever the password holds.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = uri.strip_prefix("amqps://") {
            (true, rest)
        } else if let Some(rest) = uri.strip_prefix("amqp://") {
            (false, rest)
        } else {
            return Err("the broker URI must start with amqp:// or amqps://".to_string());
        };
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, password)) => (decode(user)?, decode(password)?),
                None => (decode(u)?, String::new()),
            },
            None => ("guest".to_string(), "guest".to_string()),
        };
        let host = if let Some(bracketed) = hostport.strip_prefix('[') {
            bracketed.split(']').next().unwrap_or_default().to_string()
        } else {
            hostport.split(':').next().unwrap_or_default().to_string()
        };
        let host = if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        };
        let vhost = if path.is_empty() {
            "/".to_string()
        } else {
            decode(path)?
        };
        Ok(Broker {
            tls,
            user,
            password,
            host,
            vhost,
        })
    }

    fn is_local(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "::1") || self.host.starts_with("127.")
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &"***")
            .field("host", &self.host)
            .field("vhost", &self.vhost)
            .finish()
    }
}

/// Percent-decodes one URI component.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    format!("bad percent-escape in the broker URI near `{}`", &s[i..])
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the broker URI is not UTF-8 once decoded".to_string())
}

/// Percent-encodes one path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The services served on the broker at `uri`, with their consumer counts,
/// sorted by name. `management` is the management API's URL when the user
/// named one.
pub fn list(uri: &str, management: Option<&str>) -> Result<Vec<(String, u64)>, String> {
    let broker = Broker::parse(uri)?;
    let management = match management {
        Some(url) => Some(Management::parse(url)?),
        None => Management::derive(&broker),
    };
    let asked = match &management {
        Some(management) => management_queues(&broker, management),
        None => Err(format!(
            "was not asked: the broker is on another host over amqp://, and its password \
             would cross the network in clear (name the API with --management-url, \
             https://{}:{MANAGEMENT_TLS_PORT} or http://… if that is what you want)",
            broker.host
        )),
    };
    let queues = match asked {
        Ok(queues) => queues,
        Err(management) => {
            if !broker.is_local() {
                eprintln!(
                    "note: the management API did not answer ({management}); asking rabbitmqctl, \
                     which lists the queues of the RabbitMQ node on this machine, not necessarily {}",
                    broker.host
                );
            }
            rabbitmqctl_queues(&broker.vhost).map_err(|ctl| {
                format!(
                    "cannot list the services: the management API {management}, and {ctl}. \
                     See `shimeji services --help`."
                )
            })?
        }
    };
    let mut services: Vec<(String, u64)> = queues
        .into_iter()
        .filter(|(_, consumers)| *consumers > 0)
        .filter_map(|(name, consumers)| {
            name.strip_prefix("rpc-")
                .filter(|s| !s.is_empty())
                .map(|s| (s.to_string(), consumers))
        })
        .collect();
    services.sort();
    Ok(services)
}

/// The vhost's queues and their consumer counts from the management API.
/// The error completes "the management API …".
fn management_queues(
    broker: &Broker,
    management: &Management,
) -> Result<Vec<(String, u64)>, String> {
    let place = format!("at {}", management.url());
    let port = management.port;
    let addrs: Vec<_> = (management.host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{place} cannot be resolved: {e}"))?
        .collect();
    let tcp = addrs
        .iter()
        .find_map(|addr| TcpStream::connect_timeout(addr, HTTP_TIMEOUT).ok())
        .ok_or_else(|| {
            format!("{place} is not reachable (the management plugin is not enabled)")
        })?;
    let fail = |e: std::io::Error| format!("{place} failed: {e}");
    tcp.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
    tcp.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
    let credentials = base64(format!("{}:{}", broker.user, broker.password).as_bytes());
    let host_header = management.url();
    let host_header = host_header
        .split_once("://")
        .map_or(host_header.as_str(), |(_, h)| h);
    let request = format!(
        "GET /api/queues/{}?columns=name,consumers HTTP/1.0\r\nHost: {host_header}\r\n\
         Authorization: Basic {credentials}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        encode(&broker.vhost),
    );
    let mut response = Vec::new();
    if management.tls {
        let mut stream = tls_stream(&management.host, tcp).map_err(|e| format!("{place} {e}"))?;
        stream.write_all(request.as_bytes()).map_err(fail)?;
        read_response(&mut stream, &mut response).map_err(fail)?;
    } else {
        let mut stream = tcp;
        stream.write_all(request.as_bytes()).map_err(fail)?;
        read_response(&mut stream, &mut response).map_err(fail)?;
    }
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{place} sent no HTTP response"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let mut body = response[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{place} sent no HTTP response"))?;
    match status {
        200 => {}
        401 => {
            return Err(format!(
                "{place} refused the broker URI's user and password"
            ))
        }
        404 => return Err(format!("{place} knows no virtual host `{}`", broker.vhost)),
        other => return Err(format!("{place} answered HTTP {other}")),
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body).ok_or_else(|| format!("{place} sent a bad chunked body"))?;
    }
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

/// A TLS client stream to `host` over `tcp`, the server's certificate
/// checked against the webpki roots. The error completes "at <url> …".
fn tls_stream(
    host: &str,
    tcp: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("cannot set TLS up: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("is not a TLS server name: {e}"))?;
    let connection = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("cannot start TLS: {e}"))?;
    Ok(rustls::StreamOwned::new(connection, tcp))
}

/// Reads a whole HTTP/1.0 response; a TLS peer that closes without
/// `close_notify` after the body is taken as the end.
fn read_response(stream: &mut impl Read, out: &mut Vec<u8>) -> std::io::Result<()> {
    match stream.read_to_end(out) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Decodes an HTTP chunked body.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// The vhost's queues and their consumer counts from `rabbitmqctl`. The
/// error completes "… and …".
fn rabbitmqctl_queues(vhost: &str) -> Result<Vec<(String, u64)>, String> {
    let output = Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "-p", vhost, "name", "consumers"])
        .output()
        .map_err(|e| format!("rabbitmqctl cannot be run here: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        return Err(format!(
            "`rabbitmqctl list_queues -p {vhost}` failed ({}): {reason}",
            output.status
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split('\t');
            let name = parts.next()?.trim();
            let consumers = parts.next()?.trim().parse().ok()?;
            Some((name.to_string(), consumers))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_broker_uris() {
        let b = Broker::parse("amqp://app:p%40ss@rabbit:5672/shop%2Fprod").unwrap();
        assert_eq!(
            b,
            Broker {
                tls: false,
                user: "app".into(),
                password: "p@ss".into(),
                host: "rabbit".into(),
                vhost: "shop/prod".into()
            }
        );
        let b = Broker::parse("amqp://localhost").unwrap();
        assert_eq!((b.user.as_str(), b.vhost.as_str()), ("guest", "/"));
        assert!(b.is_local());
        assert_eq!(Broker::parse("amqp://[::1]:5672/").unwrap().host, "::1");
        assert!(Broker::parse("http://x").is_err());
        // The userinfo ends at the last `@`, whatever the password holds.
        let b = Broker::parse("amqps://app:p/a@ss:x@rabbit:5671/vh").unwrap();
        assert_eq!(
            (
                b.tls,
                b.password.as_str(),
                b.host.as_str(),
                b.vhost.as_str()
            ),
            (true, "p/a@ss:x", "rabbit", "vh")
        );
        assert!(!format!("{b:?}").contains("p/a@ss"), "{b:?}");
    }

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

    #[test]
    fn https_sends_no_cleartext() {
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
        let err = management_queues(&broker, &management).unwrap_err();
        let first = server.join().unwrap();
        assert_eq!(
            first.first(),
            Some(&0x16),
            "a TLS handshake record: {first:?}"
        );
        let text = String::from_utf8_lossy(&first);
        assert!(
            !text.contains("GET") && !text.contains("Authorization"),
            "{text}"
        );
        assert!(!text.contains(&base64(b"app:s3cret")), "{text}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn encodings() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("shimeji-test_1"), "shimeji-test_1");
        assert_eq!(base64(b"guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n").unwrap(),
            b"Wikipedia"
        );
    }

    fn plain(port: u16) -> Management {
        Management {
            tls: false,
            host: "127.0.0.1".into(),
            port,
        }
    }

    /// A one-request HTTP server that checks the request and sends `response`.
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

    #[test]
    fn reads_the_management_api() {
        let (port, server) = fake_management(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
             37\r\n[{\"name\":\"rpc-greeter\",\"consumers\":2},{\"name\":\"evt-x\"}]\r\n0\r\n\r\n",
        );
        let broker = Broker::parse("amqp://guest:guest@127.0.0.1/").unwrap();
        let queues = management_queues(&broker, &plain(port)).unwrap();
        assert_eq!(queues, vec![("rpc-greeter".into(), 2), ("evt-x".into(), 0)]);
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /api/queues/%2F?columns=name,consumers "),
            "{request}"
        );
        assert!(request.contains("Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"));
    }

    #[test]
    fn management_errors_say_why() {
        let (port, _server) = fake_management("HTTP/1.1 401 Unauthorized\r\n\r\n");
        let broker = Broker::parse("amqp://u:p@127.0.0.1/").unwrap();
        let err = management_queues(&broker, &plain(port)).unwrap_err();
        assert!(err.contains("refused"), "{err}");
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = management_queues(&broker, &plain(port)).unwrap_err();
        assert!(err.contains("not reachable"), "{err}");
    }
}
