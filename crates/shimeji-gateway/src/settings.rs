//! What an operator can tune, with the defaults a gateway in front of
//! shimeji instances on one network wants.

use std::net::SocketAddr;
use std::time::Duration;

use crate::GatewayError;

/// The gateway's settings. [`Settings::default`] holds the defaults; the
/// `shimeji gateway` command sets the same fields from its options.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to accept client connections (`0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// Where to serve `/metrics` and `/health` instead of on
    /// [`listen`](Self::listen). `None` (the default): they are served on
    /// `listen`, before any route an instance registered.
    pub admin_listen: Option<SocketAddr>,
    /// Threads serving clients, each with its own event loop, connection
    /// pool and listener on the same port (`SO_REUSEPORT`: the kernel
    /// spreads connections over them). 1 (the default) serves on the
    /// runtime that starts the gateway; `shimeji gateway` uses one per
    /// core.
    pub workers: usize,
    /// The id the gateway reports its applied revision under; `None`
    /// makes one (`gateway-<host>-<pid>-<random>`).
    pub router_id: Option<String>,
    /// The lease of the router report: a gateway that dies stops holding
    /// back stopping instances after this long (10 s).
    pub router_ttl: Duration,
    /// How long to wait for a TCP connection to an instance (1 s).
    pub connect_timeout: Duration,
    /// How long one try may wait for the response head, connecting
    /// included (30 s).
    pub try_timeout: Duration,
    /// How long a request may wait for a response head over all its tries
    /// (60 s). A response body, once its head came, streams for as long as
    /// it takes.
    pub deadline: Duration,
    /// Connect failures in a row that take an instance out of rotation (3).
    pub eject_after: u32,
    /// How long an ejected instance stays out (5 s); then it gets traffic
    /// again, and one more connect failure ejects it again.
    pub eject_for: Duration,
    /// The share of requests that may be retried, over
    /// [`retry_window`](Self::retry_window), per service (0.2).
    pub retry_ratio: f32,
    /// Retries per second allowed on top of the ratio, so that a service
    /// with little traffic can still retry (10).
    pub retry_min_per_sec: u32,
    /// The window the retry budget counts over (10 s; 1 to 60 s).
    pub retry_window: Duration,
    /// Request bodies of idempotent requests up to this size (with a
    /// `Content-Length`) are read before they are sent, so that they can be
    /// sent again to another instance (64 KiB).
    pub replay_buffer: usize,
    /// How long an idle pooled connection to an instance is kept (20 s).
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per instance (256).
    pub pool_max_idle_per_host: usize,
    /// How long a client may take to send a request head (30 s).
    pub header_read_timeout: Duration,
    /// How long a stopping gateway lets in-flight requests and open
    /// WebSocket tunnels finish (30 s).
    pub shutdown_grace: Duration,
    /// The cookie that keeps a client on one instance of a service whose
    /// record asks for sticky sessions (`shimeji_sticky`).
    pub sticky_cookie: String,
    /// Socket.IO session ids remembered for sticky routing (100 000).
    pub sticky_sessions: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: None,
            workers: 1,
            router_id: None,
            router_ttl: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            try_timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(60),
            eject_after: 3,
            eject_for: Duration::from_secs(5),
            retry_ratio: 0.2,
            retry_min_per_sec: 10,
            retry_window: Duration::from_secs(10),
            replay_buffer: 64 * 1024,
            pool_idle_timeout: Duration::from_secs(20),
            pool_max_idle_per_host: 256,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            sticky_cookie: "shimeji_sticky".into(),
            sticky_sessions: 100_000,
        }
    }
}

impl Settings {
    /// Checks what cannot work: zero timeouts, a retry window outside
    /// 1 to 60 s, a ratio outside 0 to 1, a cookie name with separators.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let bad = |what: &str| Err(GatewayError::Settings(what.to_string()));
        let zero = [
            ("connect_timeout", self.connect_timeout),
            ("try_timeout", self.try_timeout),
            ("deadline", self.deadline),
            ("router_ttl", self.router_ttl),
            ("header_read_timeout", self.header_read_timeout),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, d)| d.is_zero()) {
            return bad(&format!("{name} must be more than 0"));
        }
        if self.retry_window < Duration::from_secs(1) || self.retry_window > Duration::from_secs(60)
        {
            return bad("retry_window must be between 1 and 60 seconds");
        }
        if !(0.0..=1.0).contains(&self.retry_ratio) {
            return bad("retry_ratio must be between 0 and 1");
        }
        if self.retry_min_per_sec >= i32::MAX as u32 {
            return bad("retry_min_per_sec is too large");
        }
        if self.workers == 0 || self.workers > 256 {
            return bad("workers must be between 1 and 256");
        }
        if self.eject_after == 0 {
            return bad("eject_after must be at least 1");
        }
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.sticky_cookie.is_empty() || !self.sticky_cookie.chars().all(token) {
            return bad("sticky_cookie must be a cookie name (letters, digits, -_.)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(Settings::default().validate().is_ok());
        let s = Settings {
            retry_window: Duration::from_millis(10),
            ..Settings::default()
        };
        let e = s
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("retry_window"), "{e}");
        let s = Settings {
            try_timeout: Duration::ZERO,
            ..Settings::default()
        };
        let e = s
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("try_timeout"), "{e}");
        let s = Settings {
            sticky_cookie: "a b".into(),
            ..Settings::default()
        };
        assert!(s.validate().is_err());
    }
}
