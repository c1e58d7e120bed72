//! `shimeji services`: which services the broker serves.
//!
//! AMQP has no way to list queues, so this asks RabbitMQ itself: first its
//! management HTTP API, when that plugin is enabled, then `rabbitmqctl` on
//! this machine.

mod broker;
mod management;
mod rabbitmqctl;

use broker::Broker;
use management::{Management, MANAGEMENT_TLS_PORT};

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

/// The services served on the broker at `uri`, with their consumer counts,
/// sorted by name. `management` is the management API's URL when the user
/// named one.
pub async fn list(uri: &str, management: Option<&str>) -> Result<Vec<(String, u64)>, String> {
    let broker = Broker::parse(uri)?;
    let management = match management {
        Some(url) => Some(Management::parse(url)?),
        None => Management::derive(&broker),
    };
    let asked = match &management {
        Some(management) => management::queues(&broker, management).await,
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
            rabbitmqctl::queues(&broker.vhost).map_err(|ctl| {
                format!(
                    "cannot list the services: the management API {management}, and {ctl}. \
                     See `shimeji services --help`."
                )
            })?
        }
    };
    Ok(served(queues))
}

/// The services among `queues`: the `rpc-<service>` queues with at least
/// one consumer, sorted by name.
fn served(queues: Vec<(String, u64)>) -> Vec<(String, u64)> {
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
    services
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_consumed_rpc_queues() {
        let queues = [
            ("rpc-b", 1),
            ("rpc-a", 2),
            ("rpc-idle", 0),
            ("rpc-", 1),
            ("evt-x", 3),
        ];
        let queues = queues.map(|(name, n)| (name.to_string(), n)).to_vec();
        assert_eq!(served(queues), [("a".to_string(), 2), ("b".to_string(), 1)]);
    }
}
