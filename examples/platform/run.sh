#!/usr/bin/env bash
# A small fleet on one machine, and a rolling upgrade nobody notices:
#
#   etcd (the service registry)
#   two instances of the `web` example (service `notes`), version 1
#   `shimeji gateway` in front, routing by what the instances registered
#   `shimeji upgrade notes` to version 2, one instance at a time, while a
#   client keeps calling through the gateway
#
#   bash examples/platform/run.sh
#
# Needs etcd and etcdctl (Debian: apt-get install etcd-server etcd-client)
# and protoc to build the etcd feature (apt-get install protobuf-compiler).
# Every command is printed before it runs, as you would type it; ports are
# free loopback ports picked at start. PROFILE=debug builds without
# --release; SHIMEJI_BIN and WEB_BIN name binaries already built (with the
# etcd feature) instead. Everything it started is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in etcd etcdctl protoc curl python3; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool: apt-get install etcd-server etcd-client protobuf-compiler curl python3" >&2
    exit 2
  }
done

if [[ -n ${SHIMEJI_BIN:-} && -n ${WEB_BIN:-} ]]; then
  shimeji=$SHIMEJI_BIN
  web=$WEB_BIN
else
  profile=${PROFILE:-release}
  build=(cargo build -p shimeji-cli -p shimeji-examples --features shimeji-cli/etcd --bin shimeji --example web)
  [[ $profile == release ]] && build+=(--release)
  echo "\$ ${build[*]}"
  "${build[@]}" 2>&1 | tail -n 1
  target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  shimeji="$target/$profile/shimeji"
  web="$target/$profile/examples/web"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  # The instances `upgrade` started are not children of this script: stop
  # every instance still registered, then what this script started.
  if [[ -n ${registry:-} ]]; then
    for pid in $(instances | cut -d' ' -f3); do kill "$pid" 2>/dev/null || true; done
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
say() { printf '\n# %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; }

# "instance_id version pid" of every registered instance of notes.
instances() {
  ETCDCTL_API=3 etcdctl --endpoints "$etcd_address" get --prefix /shimeji/v1/instances/notes/ \
    --print-value-only | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if line:
        r = json.loads(line)
        print(r["instance_id"], r["version"], r["pid"])'
}

# Waits until `count` instances of notes are registered.
await_instances() {
  for _ in $(seq 1 200); do
    [[ $(instances | wc -l) == "$1" ]] && return 0
    sleep 0.05
  done
  echo "expected $1 registered instance(s) of notes, found: $(instances)" >&2
  exit 1
}

say "1. etcd, the registry (a throwaway one: no fsync, data in a temporary directory)"
client_port=$(free_port)
peer_port=$(free_port)
etcd_address="127.0.0.1:$client_port"
registry="etcd://$etcd_address"
show etcd --data-dir "$work/etcd" --listen-client-urls "http://$etcd_address" --advertise-client-urls "http://$etcd_address" "&"
etcd --name platform --data-dir "$work/etcd" \
  --listen-client-urls "http://$etcd_address" --advertise-client-urls "http://$etcd_address" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "platform=http://127.0.0.1:$peer_port" --unsafe-no-fsync \
  --log-level error >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://$etcd_address/health" && break; sleep 0.05; done

say "2. two instances of notes, version 1: each registers once it serves (REGISTRY names the registry)"
for n in 1 2; do
  show REGISTRY="$registry" SERVICE_VERSION=1 WEB_SERVER_ADDRESS=127.0.0.1:0 METRICS_ADDRESS=127.0.0.1:0 "$web" "&"
  REGISTRY="$registry" SERVICE_VERSION=1 WEB_SERVER_ADDRESS=127.0.0.1:0 METRICS_ADDRESS=127.0.0.1:0 \
    RUST_LOG=warn "$web" >"$work/web-$n.log" 2>&1 &
  pids+=($!)
done
await_instances 2
show ETCDCTL_API=3 etcdctl --endpoints "$etcd_address" get --prefix /shimeji/v1/instances/notes/ --print-value-only
instances | sed 's/^/  instance /'

say "3. the gateway: routes GET /about, GET /notes/{id}, POST /notes… as the instances registered them"
gateway_port=$(free_port)
gateway="http://127.0.0.1:$gateway_port"
show "$shimeji" gateway --registry "$registry" --listen "127.0.0.1:$gateway_port" "&"
RUST_LOG=warn "$shimeji" gateway --registry "$registry" --listen "127.0.0.1:$gateway_port" \
  >"$work/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs -o /dev/null "$gateway/about" && break; sleep 0.05; done
for _ in 1 2 3 4; do
  show curl -s "$gateway/about"
  curl -s "$gateway/about"
  echo
done

say "4. a client calling GET /about through the gateway without a pause, for the whole upgrade"
(
  while [[ ! -e $work/stop ]]; do
    curl -s -o /dev/null -w '%{http_code}\n' "$gateway/about" || echo "no-answer"
  done
) >"$work/codes" &
client=$!
pids+=($client)
sleep 1

say "5. the rolling upgrade: per old instance, start a new one, wait until it is ready and every gateway routes to it, soak it, then stop the old one (it deregisters, waits for the gateways, then closes)"
command=(env SERVICE_VERSION=2 WEB_SERVER_ADDRESS=127.0.0.1:0 METRICS_ADDRESS=127.0.0.1:0 RUST_LOG=warn "$web")
show "$shimeji" upgrade notes --registry "$registry" --log-dir "$work/upgrade" --soak 2 --max-error-rate 0.01 -- "${command[@]}"
if ! "$shimeji" upgrade notes --registry "$registry" --log-dir "$work/upgrade" --soak 2 \
  --max-error-rate 0.01 -- "${command[@]}"; then
  tail -n 20 "$work"/upgrade/*.log >&2 || true
  exit 1
fi
sleep 1
touch "$work/stop"
wait "$client" 2>/dev/null || true

say "6. after it"
instances | sed 's/^/  instance /'
for _ in 1 2; do
  show curl -s "$gateway/about"
  curl -s "$gateway/about"
  echo
done
total=$(wc -l <"$work/codes")
ok=$(grep -cx 200 "$work/codes" || true)
echo "the client made $total requests during the upgrade: $ok answered 200, $((total - ok)) failed"
if [[ $(instances | cut -d' ' -f2 | sort -u) != 2 ]]; then
  echo "not every instance runs version 2" >&2
  exit 1
fi
if ((total == 0 || ok != total)); then
  echo "requests failed during the upgrade:" >&2
  sort "$work/codes" | uniq -c >&2
  exit 1
fi
echo "upgrade done with no failed request"
