//! MicroFlack, the microservices chat application, on shimeji: API- and
//! event-compatible with the original, one module per service.
//!
//! | service | serves | owns |
//! |---|---|---|
//! | [`users`] | `/api/users` | accounts, presence |
//! | [`tokens`] | `/api/tokens` | logins, revocations |
//! | [`messages`] | `/api/messages` | messages, rendering, link previews |
//! | [`push`] | `/socket.io` | Socket.IO clients |
//! | [`ui`] | `/` | the page |
//!
//! Between services: RPC (tokens → users, push → users and messages) and
//! events (`updated_model` from users and messages, relayed by every push
//! instance; `token_revoked` from tokens, learnt by every instance).

pub mod api;
pub mod auth;
pub mod db;
pub mod list_cache;
pub mod messages;
pub mod preview;
pub mod push;
pub mod render;
pub mod tokens;
pub mod ui;
pub mod users;

use shimeji::{Config, ServiceRunner};

/// Every service, in the order they start.
pub const SERVICES: [&str; 5] = ["users", "tokens", "messages", "push", "ui"];

/// The address served when `WEB_SERVER_ADDRESS` is unset.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:5000";

/// The config keys MicroFlack reads from the environment, besides shimeji's.
pub const ENV_KEYS: [&str; 8] = [
    db::DATA_KEY,
    users::DATABASE_KEY,
    messages::DATABASE_KEY,
    list_cache::MAX_AGE_KEY,
    tokens::DATABASE_KEY,
    auth::SECRET_KEY,
    preview::ALLOW_PRIVATE_KEY,
    ui::NO_SOCKETIO_KEY,
];

/// Why the service list is wrong.
#[derive(Debug, thiserror::Error)]
#[error("unknown service `{0}` (the services are users, tokens, messages, push, ui)")]
pub struct UnknownService(pub String);

/// The services a comma-separated list names (`all` or empty: every one).
pub fn parse_services(list: &str) -> Result<Vec<&'static str>, UnknownService> {
    let mut chosen = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "all" {
            return Ok(SERVICES.to_vec());
        }
        let known = SERVICES
            .iter()
            .find(|s| **s == name)
            .ok_or_else(|| UnknownService(name.to_string()))?;
        if !chosen.contains(known) {
            chosen.push(*known);
        }
    }
    if chosen.is_empty() {
        chosen = SERVICES.to_vec();
    }
    Ok(chosen)
}

/// Adds one instance of each named service to `runner`.
pub fn add_services(mut runner: ServiceRunner, services: &[&str]) -> ServiceRunner {
    for name in services {
        runner = match *name {
            "users" => runner.service(users::Users::default()),
            "tokens" => runner.service(tokens::Tokens::default()),
            "messages" => runner.service(messages::Messages::default()),
            "push" => runner.service(push::Push::default()),
            "ui" => runner.service(ui::Ui::default()),
            _ => runner,
        };
    }
    runner
}

/// Whether the secret was generated (and so differs from process to
/// process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// `JWT_SECRET_KEY` was set.
    Configured,
    /// A random one for this process.
    Generated,
}

/// `config` completed with MicroFlack's defaults: the web address, enough
/// workers for long-polling Socket.IO clients, and a random JWT secret
/// when none is set.
pub fn with_defaults(mut config: Config) -> (Config, Secret) {
    let missing = |config: &Config, key: &str| {
        config
            .get::<serde_json::Value>(key)
            .ok()
            .flatten()
            .is_none_or(|v| v.as_str() == Some(""))
    };
    if missing(&config, "WEB_SERVER_ADDRESS") {
        config = config.set("WEB_SERVER_ADDRESS", DEFAULT_ADDRESS);
    }
    if missing(&config, "max_workers") {
        config = config.set("max_workers", 200);
    }
    let secret = if missing(&config, auth::SECRET_KEY) {
        config = config.set(auth::SECRET_KEY, auth::random_secret());
        Secret::Generated
    } else {
        Secret::Configured
    };
    (config, secret)
}

/// shimeji's configuration from the environment, plus MicroFlack's keys.
pub fn config_from_env() -> Config {
    let mut config = Config::from_env();
    for key in ENV_KEYS {
        if let Ok(value) = std::env::var(key) {
            config = config.set(key, value);
        }
    }
    config
}
