#!/usr/bin/env bash
# Instructions per proxied request in the gateway, under callgrind: one
# instance of examples/web registered in a throwaway etcd, the gateway
# with one worker under `valgrind --tool=callgrind`, a fixed number of
# keep-alive `GET /notes/1` (bench/gateway/count.py). Runs the gateway
# twice, with FEW and with MANY requests, and divides the difference of
# the two instruction totals by MANY - FEW, so that start-up and stopping
# cancel out.
#
#   bash bench/gateway/profile.sh [FEW] [MANY] [CONNECTIONS]
#
# Defaults: 2000, 12000, 8. PROFILE_KEEP=DIR keeps the callgrind output of
# the larger run there (read it with callgrind_annotate). Needs etcd,
# etcdctl, valgrind, protoc (Debian: apt-get install etcd-server
# etcd-client valgrind protobuf-compiler). Builds `shimeji` (feature etcd)
# and `examples/web` in release mode first. Every process it starts is
# stopped by its PID when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

few=${1:-2000}
many=${2:-12000}
connections=${3:-8}
target=${CARGO_TARGET_DIR:-target}

for tool in etcd etcdctl valgrind callgrind_annotate protoc python3; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool: apt-get install etcd-server etcd-client valgrind protobuf-compiler python3" >&2
    exit 2
  }
done
((many > few)) || { echo "MANY must be larger than FEW" >&2; exit 2; }

cargo build --release -p shimeji-cli -p shimeji-examples --features shimeji-cli/etcd --bin shimeji --example web >&2
shimeji=$target/release/shimeji
web=$target/release/examples/web

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# free_port, wait_http, start_etcd, start_registered_web
source bench/gateway/common.sh

start_etcd p "$work/etcd" "$work/etcd.log"
pids+=($etcd_pid)
cp=$etcd_port
export ETCDCTL_API=3

start_registered_web profile-1 "$work/web.log"

# One gateway run under callgrind serving `count` requests; prints the
# run's instruction total.
profiled() { # count
  local gp out pid
  gp=$(free_port)
  out="$work/callgrind.$1"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$shimeji" gateway --registry "etcd://127.0.0.1:$cp" --listen "127.0.0.1:$gp" --workers 1 \
    >"$work/gateway.$1.log" 2>&1 &
  pid=$!
  pids+=($pid)
  for _ in $(seq 1 600); do
    curl -fs -o /dev/null "http://127.0.0.1:$gp/notes/1" && break
    sleep 0.1
  done
  python3 bench/gateway/count.py "http://127.0.0.1:$gp/notes/1" "$1" "$connections"
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^summary:|^totals:/ {print $2; exit}' "$out"
}

few_total=$(profiled "$few")
many_total=$(profiled "$many")
if [[ -n ${PROFILE_KEEP:-} ]]; then
  mkdir -p "$PROFILE_KEEP"
  cp "$work/callgrind.$many" "$PROFILE_KEEP/callgrind.out"
fi
echo "gateway, 1 worker, $connections keep-alive connections, GET /notes/1 (one readiness probe per run besides)"
echo "  $few requests: $few_total instructions"
echo "  $many requests: $many_total instructions"
awk -v a="$few_total" -v b="$many_total" -v n=$((many - few)) \
  'BEGIN {printf "  per request: %.1f k instructions\n", (b - a) / n / 1000}'
