//! HAProxy's runtime API, spoken over its stats socket (`stats socket PATH
//! level admin` in haproxy.cfg): one command per connection, the answer
//! read until HAProxy closes it. Only the commands `haproxy-sync` needs,
//! with their answers parsed and their refusals typed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// What went wrong talking to HAProxy.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// The socket cannot be connected to, written or read.
    #[error("cannot talk to HAProxy on {path}: {source}")]
    Unreachable {
        /// The socket's path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No complete answer in time.
    #[error("HAProxy did not answer `{command}` within {timeout:?}")]
    Timeout {
        /// The command.
        command: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The socket is not an admin-level socket.
    #[error(
        "HAProxy refused `{command}`: permission denied (the stats socket needs `level admin`)"
    )]
    NotAdmin {
        /// The command.
        command: String,
    },
    /// The backend does not exist (it must be declared in haproxy.cfg).
    #[error("HAProxy has no backend `{0}` (declare it in haproxy.cfg)")]
    NoSuchBackend(String),
    /// The server does not exist.
    #[error("HAProxy has no server `{0}`")]
    NoSuchServer(String),
    /// The server still has connections, so it cannot be deleted yet.
    #[error("server `{0}` still has connections attached: not deleted yet")]
    ServerBusy(String),
    /// The backend's balancing algorithm does not allow servers to be added
    /// at run time.
    #[error(
        "backend `{0}` cannot take servers at run time: use `balance leastconn` or `roundrobin`"
    )]
    NotDynamic(String),
    /// Any other refusal, with HAProxy's words.
    #[error("HAProxy refused `{command}`: {answer}")]
    Refused {
        /// The command.
        command: String,
        /// What HAProxy answered.
        answer: String,
    },
    /// An answer this code does not understand.
    #[error("HAProxy's answer to `{command}` is not understood: {reason}")]
    BadAnswer {
        /// The command.
        command: String,
        /// Why.
        reason: String,
    },
}

/// A server as `show servers state` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// Its backend.
    pub backend: String,
    /// Its name.
    pub name: String,
    /// Its address (`-` when it has none, an unresolved name).
    pub addr: String,
    /// Its port.
    pub port: u16,
    /// `srv_admin_state`: a set of flags, 0 when ready.
    pub admin_state: u32,
}

/// `srv_admin_state` flags of maintenance (forced, inherited, from the
/// configuration, from resolution, from a health check's hostname).
const ADMIN_MAINT: u32 = 0x01 | 0x02 | 0x04 | 0x20 | 0x40;
/// `srv_admin_state` flags of drain (forced, inherited).
const ADMIN_DRAIN: u32 = 0x08 | 0x10;

impl ServerState {
    /// Whether it takes new requests (neither in maintenance nor draining).
    pub fn is_ready(&self) -> bool {
        self.admin_state & (ADMIN_MAINT | ADMIN_DRAIN) == 0
    }

    /// Whether it is in maintenance.
    pub fn is_maint(&self) -> bool {
        self.admin_state & ADMIN_MAINT != 0
    }

    /// Whether it is at `addr`.
    pub fn is_at(&self, addr: SocketAddr) -> bool {
        self.port == addr.port() && self.addr == addr.ip().to_string()
    }
}

/// A server's traffic, from `show stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerLoad {
    /// Sessions now (`scur`).
    pub sessions: u64,
    /// Requests queued for it (`qcur`).
    pub queued: u64,
}

/// A client of HAProxy's runtime API on one socket.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    socket: PathBuf,
    timeout: Duration,
}

impl RuntimeApi {
    /// The API on the socket at `socket`; each command may take `timeout`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        RuntimeApi {
            socket: socket.into(),
            timeout,
        }
    }

    /// Sends `command` and returns HAProxy's whole answer.
    pub async fn command(&self, command: &str) -> Result<String, HaproxyError> {
        let unreachable = |source| HaproxyError::Unreachable {
            path: self.socket.display().to_string(),
            source,
        };
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket)
                .await
                .map_err(unreachable)?;
            stream
                .write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(unreachable)?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.map_err(unreachable)?;
            Ok(String::from_utf8_lossy(&answer).into_owned())
        };
        let answer = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HaproxyError::Timeout {
                command: command.into(),
                timeout: self.timeout,
            })??;
        tracing::trace!(command, answer = answer.trim(), "haproxy");
        if answer.trim() == "Permission denied" {
            return Err(HaproxyError::NotAdmin {
                command: command.into(),
            });
        }
        Ok(answer)
    }

    /// The names of every backend (`show backend`).
    pub async fn backends(&self) -> Result<BTreeSet<String>, HaproxyError> {
        let answer = self.command("show backend").await?;
        parse_backends(&answer).map_err(|reason| HaproxyError::BadAnswer {
            command: "show backend".into(),
            reason,
        })
    }

    /// Every server of every backend (`show servers state`).
    pub async fn servers(&self) -> Result<Vec<ServerState>, HaproxyError> {
        let answer = self.command("show servers state").await?;
        parse_servers_state(&answer).map_err(|reason| HaproxyError::BadAnswer {
            command: "show servers state".into(),
            reason,
        })
    }

    /// The traffic of every server, by `(backend, server)` (`show stat`).
    pub async fn loads(
        &self,
    ) -> Result<std::collections::BTreeMap<(String, String), ServerLoad>, HaproxyError> {
        let command = "show stat -1 4 -1";
        let answer = self.command(command).await?;
        parse_stat(&answer).map_err(|reason| HaproxyError::BadAnswer {
            command: command.into(),
            reason,
        })
    }

    /// Adds server `backend/name` at `addr`, in maintenance, with the
    /// server keywords `options` (`check inter 1s`, …).
    pub async fn add_server(
        &self,
        backend: &str,
        name: &str,
        addr: SocketAddr,
        options: &str,
    ) -> Result<(), HaproxyError> {
        let command = format!("add server {backend}/{name} {addr} {options}");
        let answer = self.command(command.trim_end()).await?;
        expect(
            command.trim_end(),
            &answer,
            "New server registered.",
            backend,
            name,
        )
    }

    /// Turns health checks on for `backend/name`.
    pub async fn enable_health(&self, backend: &str, name: &str) -> Result<(), HaproxyError> {
        self.simple(&format!("enable health {backend}/{name}"), backend, name)
            .await
    }

    /// Takes `backend/name` out of maintenance.
    pub async fn enable_server(&self, backend: &str, name: &str) -> Result<(), HaproxyError> {
        self.simple(&format!("enable server {backend}/{name}"), backend, name)
            .await
    }

    /// Sets the admin state of `backend/name`: `ready`, `drain` or `maint`.
    pub async fn set_state(
        &self,
        backend: &str,
        name: &str,
        state: &str,
    ) -> Result<(), HaproxyError> {
        self.simple(
            &format!("set server {backend}/{name} state {state}"),
            backend,
            name,
        )
        .await
    }

    /// Moves `backend/name` to `addr`.
    pub async fn set_addr(
        &self,
        backend: &str,
        name: &str,
        addr: SocketAddr,
    ) -> Result<(), HaproxyError> {
        let command = format!(
            "set server {backend}/{name} addr {} port {}",
            addr.ip(),
            addr.port()
        );
        let answer = self.command(&command).await?;
        // "IP changed from … to …, port changed from … to …" or "no need to change …".
        if answer.contains("changed") || answer.contains("no need to change") {
            return Ok(());
        }
        classify(&command, &answer, backend, name)
    }

    /// Closes every session of `backend/name` (after a drain that took too
    /// long).
    pub async fn shutdown_sessions(&self, backend: &str, name: &str) -> Result<(), HaproxyError> {
        self.simple(
            &format!("shutdown sessions server {backend}/{name}"),
            backend,
            name,
        )
        .await
    }

    /// Deletes `backend/name` (it must be in maintenance, with no
    /// connection left).
    pub async fn del_server(&self, backend: &str, name: &str) -> Result<(), HaproxyError> {
        let command = format!("del server {backend}/{name}");
        let answer = self.command(&command).await?;
        expect(&command, &answer, "Server deleted.", backend, name)
    }

    /// A command whose success is an empty answer.
    async fn simple(&self, command: &str, backend: &str, name: &str) -> Result<(), HaproxyError> {
        let answer = self.command(command).await?;
        expect(command, &answer, "", backend, name)
    }
}

/// Ok when HAProxy answered `success`; the typed refusal otherwise.
fn expect(
    command: &str,
    answer: &str,
    success: &str,
    backend: &str,
    name: &str,
) -> Result<(), HaproxyError> {
    if answer.trim() == success {
        Ok(())
    } else {
        classify(command, answer, backend, name)
    }
}

/// The error an answer that is not a success means.
fn classify(command: &str, answer: &str, backend: &str, name: &str) -> Result<(), HaproxyError> {
    let answer = answer.trim();
    let lower = answer.to_ascii_lowercase();
    Err(
        if lower.contains("no such backend") || lower.contains("no such proxy") {
            HaproxyError::NoSuchBackend(backend.into())
        } else if lower.contains("no such server") {
            HaproxyError::NoSuchServer(format!("{backend}/{name}"))
        } else if lower.contains("still has connections") {
            HaproxyError::ServerBusy(format!("{backend}/{name}"))
        } else if lower.contains("dynamic load balancing") || lower.contains("non-dynamic") {
            HaproxyError::NotDynamic(backend.into())
        } else {
            HaproxyError::Refused {
                command: command.into(),
                answer: answer.lines().collect::<Vec<_>>().join(" / "),
            }
        },
    )
}

/// The backend names of a `show backend` answer (`# name` then one a line).
fn parse_backends(answer: &str) -> Result<BTreeSet<String>, String> {
    let mut lines = answer.lines();
    match lines.next() {
        Some(header) if header.starts_with("# name") => {}
        other => return Err(format!("expected `# name`, got {other:?}")),
    }
    Ok(lines
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// The servers of a `show servers state` answer: a version line (`1`), a
/// header naming the columns, then one server a line.
fn parse_servers_state(answer: &str) -> Result<Vec<ServerState>, String> {
    let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
    match lines.next().map(str::trim) {
        Some("1") => {}
        other => return Err(format!("expected format version 1, got {other:?}")),
    }
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix('#'))
        .ok_or("no header line")?;
    let columns: Vec<&str> = header.split_whitespace().collect();
    let index = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("no column `{name}`"))
    };
    let (be, srv, addr, admin, port) = (
        index("be_name")?,
        index("srv_name")?,
        index("srv_addr")?,
        index("srv_admin_state")?,
        index("srv_port")?,
    );
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let field = |i: usize| {
                fields
                    .get(i)
                    .copied()
                    .ok_or_else(|| format!("short line `{line}`"))
            };
            Ok(ServerState {
                backend: field(be)?.into(),
                name: field(srv)?.into(),
                addr: field(addr)?.into(),
                port: field(port)?.parse().unwrap_or(0),
                admin_state: field(admin)?
                    .parse()
                    .map_err(|_| format!("bad srv_admin_state in `{line}`"))?,
            })
        })
        .collect()
}

/// The servers' `scur` and `qcur` of a `show stat` answer (CSV, its header
/// line starting with `# `).
fn parse_stat(
    answer: &str,
) -> Result<std::collections::BTreeMap<(String, String), ServerLoad>, String> {
    let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or("no CSV header")?;
    let columns: Vec<&str> = header.split(',').collect();
    let index = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("no column `{name}`"))
    };
    let (px, sv, scur, qcur) = (
        index("pxname")?,
        index("svname")?,
        index("scur")?,
        index("qcur")?,
    );
    let mut loads = std::collections::BTreeMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(p), Some(s)) = (fields.get(px), fields.get(sv)) else {
            return Err(format!("short line `{line}`"));
        };
        if *s == "BACKEND" || *s == "FRONTEND" {
            continue;
        }
        let number = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        loads.insert(
            (p.to_string(), s.to_string()),
            ServerLoad {
                sessions: number(scur),
                queued: number(qcur),
            },
        );
    }
    Ok(loads)
}

/// Whether `name` can be an HAProxy proxy or server name (letters, digits,
/// `-`, `_`, `.`, `:`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// The HAProxy server name of an instance id: the id with every character
/// HAProxy does not allow in a name replaced by `_`; when that changed it
/// (or it is longer than 48 characters), shortened and followed by 8 hex
/// digits of a hash of the whole id, so two ids never share a name.
pub fn server_name(instance_id: &str) -> String {
    const MAX: usize = 48;
    let clean: String = instance_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == instance_id && clean.len() <= MAX {
        return clean;
    }
    // FNV-1a: the same name in every run, for every build.
    let hash = instance_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let head: String = clean.chars().take(MAX - 9).collect();
    format!("{head}-{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_state_is_parsed() {
        let header = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n";
        let answer = format!("{header}3 notes 1 a1 127.0.0.1 2 8 1 1 0 1 0 0 0 0 0 0 - 18081 - 0 0 - - 0\n3 notes 2 a2 127.0.0.1 2 0 1 1 0 1 0 0 0 0 0 0 - 18082 - 0 0 - - 0\n\n");
        let servers = parse_servers_state(&answer).unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].name, "a1");
        assert_eq!(servers[0].port, 18081);
        assert!(!servers[0].is_ready() && !servers[0].is_maint());
        assert!(servers[1].is_ready());
        assert!(servers[1].is_at("127.0.0.1:18082".parse().unwrap()));
        assert!(parse_servers_state("Unknown command\n").is_err());
        assert!(parse_servers_state(&format!("{header}\n"))
            .unwrap()
            .is_empty());
        assert!(parse_servers_state("1\n# be_id be_name\n").is_err());
    }

    #[test]
    fn stat_and_backends_are_parsed() {
        let answer = "# pxname,svname,qcur,qmax,scur,smax\nnotes,a1,0,0,3,4\nnotes,BACKEND,0,0,3,4\nusers,u1,2,2,0,1\n\n";
        let loads = parse_stat(answer).unwrap();
        assert_eq!(loads.len(), 2);
        assert_eq!(
            loads[&("notes".to_string(), "a1".to_string())],
            ServerLoad {
                sessions: 3,
                queued: 0
            }
        );
        assert_eq!(loads[&("users".to_string(), "u1".to_string())].queued, 2);
        let backends = parse_backends("# name\nstats\nnotes\n\n").unwrap();
        assert!(backends.contains("notes") && backends.len() == 2);
        assert!(parse_backends("nope").is_err());
    }

    #[test]
    fn refusals_are_typed() {
        let c = |answer| classify("x", answer, "b", "s").unwrap_err();
        assert!(matches!(
            c("No such server.\n"),
            HaproxyError::NoSuchServer(_)
        ));
        assert!(matches!(
            c("No such backend.\n"),
            HaproxyError::NoSuchBackend(_)
        ));
        assert!(matches!(
            c("Server still has connections attached to it, cannot remove it.\n"),
            HaproxyError::ServerBusy(_)
        ));
        assert!(matches!(
            c("Backend must use a dynamic load balancing to support dynamic servers.\n"),
            HaproxyError::NotDynamic(_)
        ));
        assert!(matches!(
            c("Unknown command\n"),
            HaproxyError::Refused { .. }
        ));
        assert!(expect(
            "x",
            "New server registered.\n\n",
            "New server registered.",
            "b",
            "s"
        )
        .is_ok());
        assert!(expect("x", "\n", "", "b", "s").is_ok());
    }

    #[test]
    fn server_names_are_clean_and_distinct() {
        assert_eq!(server_name("web-1234-ab12cd34"), "web-1234-ab12cd34");
        let odd = server_name("host name/1");
        assert!(valid_name(&odd), "{odd}");
        assert!(odd.starts_with("host_name_1-"));
        assert_ne!(server_name("a/b"), server_name("a b"));
        assert_ne!(server_name("a_b"), server_name("a/b"));
        let long = server_name(&"x".repeat(100));
        assert!(long.len() <= 48 && valid_name(&long));
        assert_eq!(server_name("a/b"), server_name("a/b"));
        assert!(!valid_name("a b") && !valid_name("") && valid_name("svc_notes"));
    }
}
