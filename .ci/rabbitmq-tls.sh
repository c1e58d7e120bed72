#!/usr/bin/env bash
# Gives the local RabbitMQ a TLS listener on 127.0.0.1:5671 for the amqps://
# test (crates/shimeji/tests/amqp_tls.rs). Idempotent: run it as often as you
# like, as root (it writes under /etc/rabbitmq).
#
# - Makes, once, a test CA and a server certificate for localhost / 127.0.0.1
#   signed by it, with openssl, in $SHIMEJI_TLS_DIR (default
#   /etc/rabbitmq/shimeji-tls): ca.pem, server.pem, server.key.
# - Adds the listener to /etc/rabbitmq/rabbitmq.conf, for the broker's next
#   start, unless an ssl listener is configured there already.
# - Starts the listener in the running broker now (rabbitmqctl eval), unless
#   something already listens on the port: no restart, so tests running
#   against the broker meanwhile are not disturbed. It is also set in the
#   node's environment, so a `rabbitmqctl stop_app` / `start_app` keeps it.
set -euo pipefail

DIR="${SHIMEJI_TLS_DIR:-/etc/rabbitmq/shimeji-tls}"
PORT=5671
CONF=/etc/rabbitmq/rabbitmq.conf

if ! command -v openssl >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
fi
mkdir -p "$DIR"
if [ ! -s "$DIR/server.pem" ] || [ ! -s "$DIR/ca.pem" ] || [ ! -s "$DIR/server.key" ]; then
  echo "rabbitmq-tls: making a test CA and a certificate for localhost in $DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
    -subj "/CN=shimeji test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
    -keyout "$DIR/server.key" -out "$DIR/server.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$DIR/server.ext"
  openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$DIR/server.ext" \
    -out "$DIR/server.pem" 2>/dev/null
  rm -f "$DIR/server.csr" "$DIR/server.ext"
fi
if id rabbitmq >/dev/null 2>&1; then
  chown -R rabbitmq:rabbitmq "$DIR"
fi
chmod 755 "$DIR"
chmod 644 "$DIR/ca.pem" "$DIR/server.pem"
chmod 600 "$DIR/ca.key" "$DIR/server.key"

if [ -f "$CONF" ] && ! grep -q '^listeners\.ssl\.' "$CONF"; then
  echo "rabbitmq-tls: adding the TLS listener to $CONF"
  cat >>"$CONF" <<EOF
# TLS listener for the amqps:// test (.ci/rabbitmq-tls.sh)
listeners.ssl.default = 127.0.0.1:$PORT
ssl_options.cacertfile = $DIR/ca.pem
ssl_options.certfile = $DIR/server.pem
ssl_options.keyfile = $DIR/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
fi

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "rabbitmq-tls: a listener is up on 127.0.0.1:$PORT"
  exit 0
fi
echo "rabbitmq-tls: starting the TLS listener on 127.0.0.1:$PORT in the running broker"
rabbitmqctl eval "
  {ok, _} = application:ensure_all_started(ssl),
  Opts = [{cacertfile, \"$DIR/ca.pem\"}, {certfile, \"$DIR/server.pem\"},
          {keyfile, \"$DIR/server.key\"}, {verify, verify_none},
          {fail_if_no_peer_cert, false}],
  ok = application:set_env(rabbit, ssl_options, Opts),
  ok = application:set_env(rabbit, ssl_listeners, [{\"127.0.0.1\", $PORT}]),
  rabbit_networking:start_ssl_listener({\"127.0.0.1\", $PORT}, rabbit_networking:fix_ssl_options(Opts), 1)."
for _ in $(seq 1 20); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "rabbitmq-tls: listening on 127.0.0.1:$PORT"
    exit 0
  fi
  sleep 0.5
done
echo "rabbitmq-tls: the listener did not come up on 127.0.0.1:$PORT" >&2
exit 1
