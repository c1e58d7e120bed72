//! `shimeji services`: which services the broker serves.
//!
//! AMQP has no way to list queues, so this asks RabbitMQ itself: first its
//! management HTTP API, when that plugin is enabled, then `rabbitmqctl` on
//! this machine.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::Duration;

/// `shimeji services --help`.
pub const LONG_ABOUT: &str = "\
List the services the broker serves: the queues named `rpc-<service>` (the
queue Nameko and shimeji services consume RPC requests from) that have at least
one consumer, on the broker's virtual host. One name per line, sorted.

AMQP itself cannot list queues, so this relies on RabbitMQ's own tools:

  1. the management HTTP API, http://<broker host>:15672/api/queues/<vhost>,
     with the user and password of the broker URI, when the management plugin
     is enabled (`rabbitmq-plugins enable rabbitmq_management`);
  2. otherwise `rabbitmqctl list_queues -p <vhost> name consumers`, run on
     this machine: it lists the queues of the local RabbitMQ node, so it fits
     a broker that runs here, and needs the rights rabbitmqctl needs (the
     node's Erlang cookie, usually root or the rabbitmq user).

When neither works, it says why and exits 3.";

/// How long to wait for the management API.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// The management API's port.
const MANAGEMENT_PORT: u16 = 15672;

/// The parts of an AMQP URI the listing needs.
#[derive(Debug, PartialEq)]
pub struct Broker {
    user: String,
    password: String,
    host: String,
    vhost: String,
}

impl Broker {
    /// Parses `amqp://user:password@host:port/vhost`; RabbitMQ's defaults
    /// (guest, guest, vhost `/`) fill what is missing.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("amqp://")
            .or_else(|| uri.strip_prefix("amqps://"))
            .ok_or_else(|| "the broker URI must start with amqp:// or amqps://".to_string())?;
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
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
/// sorted by name.
pub fn list(uri: &str) -> Result<Vec<(String, u64)>, String> {
    let broker = Broker::parse(uri)?;
    let queues = match management_queues(&broker, MANAGEMENT_PORT) {
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
fn management_queues(broker: &Broker, port: u16) -> Result<Vec<(String, u64)>, String> {
    let place = format!("at http://{}:{port}", broker.host);
    let addrs: Vec<_> = (broker.host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{place} cannot be resolved: {e}"))?
        .collect();
    let mut stream = addrs
        .iter()
        .find_map(|addr| TcpStream::connect_timeout(addr, HTTP_TIMEOUT).ok())
        .ok_or_else(|| {
            format!("{place} is not reachable (the management plugin is not enabled)")
        })?;
    let fail = |e: std::io::Error| format!("{place} failed: {e}");
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
    let credentials = base64(format!("{}:{}", broker.user, broker.password).as_bytes());
    let request = format!(
        "GET /api/queues/{}?columns=name,consumers HTTP/1.0\r\nHost: {}:{port}\r\n\
         Authorization: Basic {credentials}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        encode(&broker.vhost),
        broker.host
    );
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(fail)?;
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
        let queues = management_queues(&broker, port).unwrap();
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
        let err = management_queues(&broker, port).unwrap_err();
        assert!(err.contains("refused"), "{err}");
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = management_queues(&broker, port).unwrap_err();
        assert!(err.contains("not reachable"), "{err}");
    }
}
