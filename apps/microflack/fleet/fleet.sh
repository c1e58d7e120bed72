#!/usr/bin/env bash
# MicroFlack as a fleet of processes on one machine:
#
#   etcd                      the service registry (a local one, data in the fleet folder)
#   RabbitMQ                  RPC and events between the services (a virtual host of the fleet's own)
#   PostgreSQL                one database per service that keeps data (users, messages, tokens)
#   2 × users, tokens, messages, push, ui   each instance its own `microflack --services NAME` process
#   shimeji gateway           in front, routing by what the instances registered
#
#   bash apps/microflack/fleet/fleet.sh up          # start it; prints the URL
#   bash apps/microflack/fleet/fleet.sh status      # what is registered, and where
#   bash apps/microflack/fleet/fleet.sh upgrade [SERVICE…]
#                                                   # roll services to a new version, one instance at a time
#   bash apps/microflack/fleet/fleet.sh down [--purge]
#                                                   # stop it all (--purge: drop its databases and virtual host too)
#
# Environment (all optional):
#   MICROFLACK_FLEET   the fleet's folder: state, logs (default ./microflack-fleet)
#   FLEET_PORT         the gateway's port on 127.0.0.1 (default 5000)
#   FLEET_INSTANCES    instances of each service (default 2)
#   FLEET_NAME         names the RabbitMQ virtual host and the databases (default microflack)
#   FLEET_VERSION      SERVICE_VERSION of the instances `up` starts (default 1);
#                      `upgrade` starts the next one (the highest running + 1) unless set
#   FLEET_POSTGRES     the PostgreSQL server (default postgres://postgres@127.0.0.1:5432)
#   AMQP_URI           the broker; default: guest on 127.0.0.1:5672, virtual host FLEET_NAME
#                      (created with rabbitmqctl)
#   MICROFLACK_BIN, SHIMEJI_BIN   binaries already built with the etcd feature
#                      (default: `cargo build --release` of both)
#   FLEET_SOAK         seconds `upgrade` watches each new instance (default 1)
#   FLEET_SEQUENCE     `upgrade` sequence: `shimeji` (default) or `original` — the
#                      original MicroFlack's (start a new instance, sleep
#                      FLEET_ORIGINAL_SLEEP seconds (default 5), kill an old
#                      one without deregistering it), kept as a negative control
#
# Needs etcd and etcdctl (Debian: apt-get install etcd-server etcd-client),
# protoc to build (apt-get install protobuf-compiler), psql, curl, python3,
# and RabbitMQ and PostgreSQL running. The JWT secret is generated once into
# the fleet's folder (mode 600) and never printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)

dir=${MICROFLACK_FLEET:-./microflack-fleet}
port=${FLEET_PORT:-5000}
instances=${FLEET_INSTANCES:-2}
name=${FLEET_NAME:-microflack}
postgres=${FLEET_POSTGRES:-postgres://postgres@127.0.0.1:5432}
services=(users tokens messages push ui)

say() { printf '# %s\n' "$*" >&2; }
die() {
  printf 'fleet: %s\n' "$*" >&2
  exit 1
}

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "missing $tool (Debian: apt-get install etcd-server etcd-client protobuf-compiler postgresql-client curl python3)"
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

binaries() {
  if [[ -n ${MICROFLACK_BIN:-} && -n ${SHIMEJI_BIN:-} ]]; then
    microflack=$MICROFLACK_BIN
    shimeji=$SHIMEJI_BIN
    return
  fi
  need cargo protoc
  say "building microflack and shimeji (release, feature etcd)"
  (cd "$root" && cargo build --release -p microflack -p shimeji-cli --features microflack/etcd,shimeji-cli/etcd \
    --bin microflack --bin shimeji 2>&1 | tail -n 1) >&2
  local target
  target=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  microflack=$target/release/microflack
  shimeji=$target/release/shimeji
}

# The fleet's settings, written by `up`, read by every other command.
load_state() {
  [[ -f $dir/fleet.env ]] || die "no fleet in $dir (start one with: $0 up)"
  set -a
  # shellcheck disable=SC1091
  . "$dir/fleet.env"
  set +a
}

etcdctl_() { ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ADDRESS" "$@"; }

# "service instance_id version pid" of every registered instance.
registered() {
  etcdctl_ get --prefix /shimeji/v1/instances/ --print-value-only 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if line:
        r = json.loads(line)
        print(r["service"], r["instance_id"], r["version"], r["pid"], r.get("http") or "-")'
}

# Waits until `count` instances of `service` are registered.
await_registered() {
  local service=$1 count=$2
  for _ in $(seq 1 600); do
    [[ $(registered | awk -v s="$service" '$1 == s' | wc -l) -ge $count ]] && return 0
    sleep 0.1
  done
  die "expected $count registered instance(s) of $service; see $dir/logs"
}

# Runs a command detached (its own session, survives this script), output
# to a log, pid to a file.
detach() {
  local id=$1
  shift
  setsid "$@" >"$dir/logs/$id.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$id.pid"
}

psql_() { psql "$postgres/postgres" -v ON_ERROR_STOP=1 -qAt "$@"; }

up() {
  need etcd etcdctl psql curl python3 setsid
  if [[ -f $dir/fleet.env ]]; then
    load_state
    if curl -fs -o /dev/null "http://$ETCD_ADDRESS/health" 2>/dev/null; then
      die "a fleet is already running from $dir (stop it with: $0 down)"
    fi
  fi
  binaries
  mkdir -p "$dir/logs" "$dir/pids"
  chmod 700 "$dir"
  local vhost=$name amqp=${AMQP_URI:-} created_vhost=
  if [[ -z $amqp ]]; then
    created_vhost=$vhost
    command -v rabbitmqctl >/dev/null || die "set AMQP_URI, or install RabbitMQ here (apt-get install rabbitmq-server)"
    rabbitmqctl add_vhost "$vhost" >/dev/null 2>&1 || true
    rabbitmqctl set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
    amqp="amqp://guest:guest@127.0.0.1:5672/$vhost"
  fi
  for db in users messages tokens; do
    if [[ -z $(psql_ -c "SELECT 1 FROM pg_database WHERE datname = '${name}_$db'") ]]; then
      psql_ -c "CREATE DATABASE ${name}_$db" || die "cannot create database ${name}_$db on the server FLEET_POSTGRES names"
    fi
  done
  local secret
  secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
  local client_port peer_port
  client_port=$(free_port)
  peer_port=$(free_port)
  umask 077
  cat >"$dir/fleet.env" <<EOF
ETCD_ADDRESS=127.0.0.1:$client_port
ETCD_PEER_PORT=$peer_port
REGISTRY=etcd://127.0.0.1:$client_port
AMQP_URI=$amqp
FLEET_VHOST=$created_vhost
FLEET_DATABASES="${name}_users ${name}_messages ${name}_tokens"
USERS_DATABASE_URL=$postgres/${name}_users
MESSAGES_DATABASE_URL=$postgres/${name}_messages
TOKENS_DATABASE_URL=$postgres/${name}_tokens
JWT_SECRET_KEY=$secret
GATEWAY=127.0.0.1:$port
MICROFLACK_BIN=$microflack
SHIMEJI_BIN=$shimeji
EOF
  umask 022
  load_state

  say "etcd on $ETCD_ADDRESS (data in $dir/etcd)"
  detach etcd etcd --name fleet --data-dir "$dir/etcd" \
    --listen-client-urls "http://$ETCD_ADDRESS" --advertise-client-urls "http://$ETCD_ADDRESS" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "fleet=http://127.0.0.1:$ETCD_PEER_PORT" --log-level error
  for _ in $(seq 1 200); do curl -fs -o /dev/null "http://$ETCD_ADDRESS/health" && break; sleep 0.05; done
  curl -fs -o /dev/null "http://$ETCD_ADDRESS/health" || die "etcd did not start; see $dir/logs/etcd.log"

  local version=${FLEET_VERSION:-1}
  for service in "${services[@]}"; do
    say "$instances × $service (version $version)"
    for n in $(seq 1 "$instances"); do
      detach "$service-$n" env SERVICE_VERSION="$version" WEB_SERVER_ADDRESS=127.0.0.1:0 \
        METRICS_ADDRESS=127.0.0.1:0 RUST_LOG="${RUST_LOG:-info}" "$MICROFLACK_BIN" --services "$service"
    done
    # The first instance of a database's service applies its migrations
    # before the next one starts.
    await_registered "$service" "$instances"
  done

  say "gateway on $GATEWAY"
  detach gateway env RUST_LOG="${RUST_LOG:-info}" "$SHIMEJI_BIN" gateway --registry "$REGISTRY" --listen "$GATEWAY"
  for _ in $(seq 1 200); do
    curl -fs -o /dev/null "http://$GATEWAY/api/users" 2>/dev/null && break
    sleep 0.05
  done
  curl -fs -o /dev/null "http://$GATEWAY/api/users" || die "the gateway does not answer; see $dir/logs/gateway.log"
  status
  echo "MicroFlack fleet is serving on http://$GATEWAY (stop it with: $0 down)"
}

status() {
  load_state
  # The broker's URI may hold a password: only its virtual host is shown.
  local vhost
  vhost=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.unquote(urllib.parse.urlsplit(sys.argv[1]).path.lstrip("/")) or "/")' "$AMQP_URI")
  echo "registry $REGISTRY, gateway http://$GATEWAY, broker virtual host $vhost"
  registered | sort | awk '{ printf "  %-9s version %-3s pid %-8s %s\n", $1, $3, $4, $5 }'
}

upgrade() {
  load_state
  local chosen=("$@")
  ((${#chosen[@]})) || chosen=("${services[@]}")
  local version=${FLEET_VERSION:-}
  if [[ -z $version ]]; then
    version=$(registered | awk '$3 ~ /^[0-9]+$/ && $3 > max { max = $3 } END { print max + 1 }')
  fi
  mkdir -p "$dir/logs/upgrade"
  local command=(env SERVICE_VERSION="$version" WEB_SERVER_ADDRESS=127.0.0.1:0 METRICS_ADDRESS=127.0.0.1:0
    RUST_LOG="${RUST_LOG:-info}" "$MICROFLACK_BIN" --services)
  for service in "${chosen[@]}"; do
    case ${FLEET_SEQUENCE:-shimeji} in
      shimeji)
        say "shimeji upgrade $service to version $version"
        "$SHIMEJI_BIN" upgrade "$service" --registry "$REGISTRY" --log-dir "$dir/logs/upgrade" \
          --soak "${FLEET_SOAK:-1}" --max-error-rate 0.01 -- "${command[@]}" "$service"
        ;;
      original)
        original_upgrade "$service" "$version" "${command[@]}" "$service"
        ;;
      *) die "FLEET_SEQUENCE is shimeji or original, not ${FLEET_SEQUENCE}" ;;
    esac
  done
}

# The original MicroFlack's roll (mfupgrade): for each old instance, start a
# new one, sleep a fixed time with no readiness check, then stop the old
# one without deregistering it (its record stays until its lease expires).
# A shimeji instance deregisters on SIGTERM, so the old one is killed.
original_upgrade() {
  local service=$1 version=$2
  shift 2
  local old
  old=$(registered | awk -v s="$service" -v v="$version" '$1 == s && $3 != v { print $4 }')
  local n=0
  for pid in $old; do
    n=$((n + 1))
    say "original sequence, $service: start a new instance, sleep ${FLEET_ORIGINAL_SLEEP:-5} s, kill $pid"
    detach "$service-v$version-$n" "$@"
    sleep "${FLEET_ORIGINAL_SLEEP:-5}"
    kill -KILL "$pid" 2>/dev/null || true
  done
}

down() {
  load_state
  local purge=${1:-}
  local pids=()
  if curl -fs -o /dev/null "http://$ETCD_ADDRESS/health" 2>/dev/null; then
    # Instances `upgrade` started are found in the registry.
    for pid in $(registered | awk '{ print $4 }'); do pids+=("$pid"); done
  fi
  for file in "$dir"/pids/*.pid; do
    [[ -e $file && $(basename "$file") != etcd.pid ]] && pids+=("$(cat "$file")")
  done
  say "stopping ${#pids[@]} processes"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 300); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [[ -e $dir/pids/etcd.pid ]]; then
    kill -TERM "$(cat "$dir/pids/etcd.pid")" 2>/dev/null || true
  fi
  rm -f "$dir"/pids/*.pid
  if [[ $purge == --purge ]]; then
    say "dropping databases $FLEET_DATABASES and the fleet's folder"
    for db in $FLEET_DATABASES; do psql_ -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; done
    if [[ -n $FLEET_VHOST ]] && command -v rabbitmqctl >/dev/null; then
      rabbitmqctl delete_vhost "$FLEET_VHOST" >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
  fi
  echo "MicroFlack fleet stopped"
}

case ${1:-} in
  up) up ;;
  status) status ;;
  upgrade) shift && upgrade "$@" ;;
  down) down "${2:-}" ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
