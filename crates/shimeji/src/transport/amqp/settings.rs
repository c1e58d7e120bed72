//! How the transport reaches the broker: [`AmqpSettings`], read from a
//! service's configuration (`AMQP_URI`, `HEARTBEAT`, `rpc_exchange`,
//! `max_message_size`, `persistent_replies`, `persistent_requests`), and the
//! TLS options of an `amqps://` broker ([`AmqpSsl`], Nameko's `AMQP_SSL`).
//!
//! In the flow: nothing here does I/O. `session` reads the URI, heartbeat
//! and TLS options when it opens a connection; `publisher`, `replies` and
//! `consumer` read the exchange, the size limit and the persistence flags
//! for each message.

use super::wire;
use crate::config::{redact_uri, Config};

/// Default largest message a service accepts (16 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// How the transport reaches the broker.
#[derive(Clone)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`, or `amqps://` for TLS.
    pub uri: String,
    /// Heartbeat in seconds (config key `HEARTBEAT`, default 60).
    pub heartbeat: u16,
    /// The RPC exchange (config key `rpc_exchange`, default `nameko-rpc`).
    pub rpc_exchange: String,
    /// Largest message body accepted: requests, events and replies (config
    /// key `max_message_size`, default 16 MiB). Checked against the size a
    /// message's content header announces, before any of its body is read
    /// into memory.
    pub max_message_size: usize,
    /// Publish replies persistent, as Nameko does (config key
    /// `persistent_replies`, default false). A reply lives for the moment
    /// between the service and its caller; writing it to disk costs about a
    /// third of the throughput and buys only that a reply waiting in its
    /// queue survives a broker restart. Events stay persistent.
    pub persistent_replies: bool,
    /// Publish requests persistent, as Nameko does (config key
    /// `persistent_requests`, default true). `false` spares the broker a
    /// disk write per call (10–25 % more calls/s measured here); a request
    /// still queued when the broker restarts is then lost, and its caller
    /// gets `Timeout`. Requests are published without confirms either way:
    /// persistence only protects requests waiting in their queue.
    pub persistent_requests: bool,
    /// TLS options for an `amqps://` broker (config key `AMQP_SSL`, as in
    /// Nameko): the CA to trust instead of the webpki (Mozilla) roots, and a
    /// client certificate. Unset: the broker's certificate is checked
    /// against the webpki roots.
    pub ssl: Option<AmqpSsl>,
}

/// TLS options, Nameko's `AMQP_SSL` keys:
///
/// ```yaml
/// AMQP_URI: amqps://app:${RABBIT_PASSWORD}@rabbit.internal:5671/
/// AMQP_SSL:
///   ca_certs: /etc/ssl/rabbit-ca.pem     # PEM file of the CA(s) to trust
///   certfile: /etc/ssl/client.pem        # client certificate (optional)
///   keyfile: /etc/ssl/client.key         # its private key (with certfile)
/// ```
///
/// The broker's name in the URI must match its certificate.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AmqpSsl {
    /// PEM file of the certificate authorities to trust.
    pub ca_certs: Option<std::path::PathBuf>,
    /// PEM file of the client certificate, for brokers that ask for one.
    pub certfile: Option<std::path::PathBuf>,
    /// PEM file of the client certificate's private key.
    pub keyfile: Option<std::path::PathBuf>,
}

impl AmqpSsl {
    /// The TLS adaptor for a broker named `domain`.
    pub(super) fn adaptor(&self, domain: &str) -> Result<amqprs::tls::TlsAdaptor, String> {
        let ca = self.ca_certs.as_deref();
        let adaptor = match (&self.certfile, &self.keyfile) {
            (Some(cert), Some(key)) => {
                amqprs::tls::TlsAdaptor::with_client_auth(ca, cert, key, domain.to_string())
            }
            (None, None) => amqprs::tls::TlsAdaptor::without_client_auth(ca, domain.to_string()),
            _ => return Err("AMQP_SSL needs both `certfile` and `keyfile`, or neither".into()),
        };
        adaptor.map_err(|e| {
            format!(
                "cannot load the TLS files of AMQP_SSL (ca_certs {:?}, certfile {:?}, keyfile {:?}): {e}",
                self.ca_certs, self.certfile, self.keyfile
            )
        })
    }
}

impl std::fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("uri", &redact_uri(&self.uri))
            .field("heartbeat", &self.heartbeat)
            .field("rpc_exchange", &self.rpc_exchange)
            .field("max_message_size", &self.max_message_size)
            .field("persistent_replies", &self.persistent_replies)
            .field("persistent_requests", &self.persistent_requests)
            .field("ssl", &self.ssl)
            .finish()
    }
}

impl AmqpSettings {
    /// Settings for `uri` with every other value at its default.
    pub fn new(uri: impl Into<String>) -> Self {
        AmqpSettings {
            uri: uri.into(),
            heartbeat: 60,
            rpc_exchange: wire::DEFAULT_RPC_EXCHANGE.to_string(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            persistent_replies: false,
            persistent_requests: true,
            ssl: None,
        }
    }

    /// Settings from a configuration; `None` when `AMQP_URI` is not set.
    pub fn from_config(config: &Config) -> Option<Self> {
        let mut settings = Self::new(config.amqp_uri()?);
        if let Ok(Some(h)) = config.get::<u16>("HEARTBEAT") {
            settings.heartbeat = h;
        }
        if let Ok(Some(x)) = config.get::<String>("rpc_exchange") {
            settings.rpc_exchange = x;
        }
        if let Ok(Some(n)) = config.get::<usize>("max_message_size") {
            settings.max_message_size = n;
        }
        if let Ok(Some(p)) = config.get::<bool>("persistent_replies") {
            settings.persistent_replies = p;
        }
        if let Ok(Some(p)) = config.get::<bool>("persistent_requests") {
            settings.persistent_requests = p;
        }
        match config.get::<AmqpSsl>("AMQP_SSL") {
            Ok(ssl) => settings.ssl = ssl,
            Err(error) => tracing::warn!(%error, "AMQP_SSL ignored"),
        }
        Some(settings)
    }
}
