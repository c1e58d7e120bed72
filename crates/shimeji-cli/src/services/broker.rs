//! The parts of the broker URI that listing the services needs.

use percent_encoding::percent_decode_str;

/// The parts of an AMQP URI the listing needs. Its `Debug` hides the
/// password.
#[derive(PartialEq)]
pub struct Broker {
    /// `amqps://`.
    pub tls: bool,
    /// The user, percent-decoded; `guest` when the URI names none.
    pub user: String,
    /// The password, percent-decoded; `guest` when the URI has no userinfo.
    pub password: String,
    /// The host, without brackets for IPv6; `localhost` when empty.
    pub host: String,
    /// The virtual host, percent-decoded; `/` when the URI has no path.
    pub vhost: String,
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

    /// The broker runs on this machine (localhost, 127.x, ::1).
    pub fn is_local(&self) -> bool {
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

/// Percent-decodes one URI component. A `%` not followed by two hex digits
/// is an error rather than kept as it is, so a mistyped password is told.
fn decode(s: &str) -> Result<String, String> {
    let bad_escape = s.match_indices('%').map(|(i, _)| i).find(|&i| {
        !s.get(i + 1..i + 3)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if let Some(i) = bad_escape {
        return Err(format!(
            "bad percent-escape in the broker URI near `{}`",
            &s[i..]
        ));
    }
    percent_decode_str(s)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| "the broker URI is not UTF-8 once decoded".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bad_escapes_are_told() {
        assert_eq!(
            Broker::parse("amqp://u:p%4@rabbit/").unwrap_err(),
            "bad percent-escape in the broker URI near `%4`"
        );
        assert!(Broker::parse("amqp://u:p%zz@rabbit/").is_err());
        assert!(Broker::parse("amqp://u:p@rabbit/%ff").is_err());
        assert_eq!(
            Broker::parse("amqp://u:100%25@rabbit/").unwrap().password,
            "100%"
        );
    }
}
