#!/usr/bin/env bash
# Instructions per proxied request, under callgrind, in the gateway and in
# HAProxy 2.6: one instance of examples/web registered in a throwaway etcd,
# the proxy with one thread under `valgrind --tool=callgrind`, a fixed
# number of keep-alive `GET /notes/1` (bench/gateway/count.py). Runs each
# proxy twice, with FEW and with MANY requests, and divides the difference
# of the two instruction totals by MANY - FEW, so that start-up and
# stopping cancel out.
#
#   bash bench/gateway/profile.sh [FEW] [MANY] [CONNECTIONS]
#
# Defaults: 2000, 12000, 8. FRONTS picks the proxies (default "gateway
# haproxy haproxy-bare": HAProxy doing the gateway's header work, and bare;
# see haproxy_config in common.sh). PROFILE_KEEP=DIR keeps the callgrind
# output of each proxy's larger run there as callgrind.FRONT.out (read it
# with callgrind_annotate). Needs etcd, etcdctl, haproxy, valgrind, protoc
# (Debian: apt-get install etcd-server etcd-client haproxy valgrind
# protobuf-compiler). Builds `shimeji` (feature etcd)
# and `examples/web` in release mode first. Every process it starts is
# stopped by its PID when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

few=${1:-2000}
many=${2:-12000}
connections=${3:-8}
target=${CARGO_TARGET_DIR:-target}

for tool in etcd etcdctl haproxy valgrind callgrind_annotate protoc python3; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool: apt-get install etcd-server etcd-client haproxy valgrind protobuf-compiler python3" >&2
    exit 2
  }
done
((many > few)) || { echo "MANY must be larger than FEW" >&2; exit 2; }

cargo build --release -p shimeji-cli -p shimeji-examples --features shimeji-cli/etcd --bin shimeji --example web >&2
shimeji=$target/release/shimeji
web=$target/release/examples/web

# start_etcd_and_notes, free_port, wait_http, haproxy_config, start_haproxy
source bench/gateway/common.sh

# A throwaway etcd and one instance of the notes example, registered by
# hand under a lease.
start_etcd_and_notes p profile-1

# One run of FRONT under callgrind serving `count` requests; prints the
# run's instruction total.
profiled() { # front count
  local port out pid
  port=$(free_port)
  out="$work/callgrind.$1.$2"
  case $1 in
    gateway)
      RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$shimeji" gateway --registry "etcd://127.0.0.1:$cp" --listen "127.0.0.1:$port" --workers 1 \
        >"$work/$1.$2.log" 2>&1 &
      ;;
    haproxy | haproxy-bare)
      haproxy_config "$port" "$([[ $1 == haproxy ]] && echo 1 || echo 0)" 1 >"$work/$1.cfg"
      valgrind --tool=callgrind --callgrind-out-file="$out" haproxy -db -f "$work/$1.cfg" \
        >"$work/$1.$2.log" 2>&1 &
      ;;
    *)
      echo "unknown front $1 (gateway, haproxy, haproxy-bare)" >&2
      exit 2
      ;;
  esac
  pid=$!
  pids+=($pid)
  for _ in $(seq 1 600); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/notes/1" && break
    sleep 0.1
  done
  python3 bench/gateway/count.py "http://127.0.0.1:$port/notes/1" "$2" "$connections" >&2 || {
    echo "$1 failed requests (its log: $work/$1.$2.log)" >&2
    exit 1
  }
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^summary:|^totals:/ {print $2; exit}' "$out"
}

echo "1 thread each, $connections keep-alive connections, GET /notes/1 (one readiness probe per run besides)"
for front in ${FRONTS:-gateway haproxy haproxy-bare}; do
  few_total=$(profiled "$front" "$few")
  many_total=$(profiled "$front" "$many")
  if [[ -n ${PROFILE_KEEP:-} ]]; then
    mkdir -p "$PROFILE_KEEP"
    cp "$work/callgrind.$front.$many" "$PROFILE_KEEP/callgrind.$front.out"
  fi
  awk -v f="$front" -v a="$few_total" -v b="$many_total" -v n=$((many - few)) -v few="$few" -v many="$many" \
    'BEGIN {printf "  %-12s %.1f k instructions per request (%s requests: %s, %s: %s)\n", f, (b - a) / n / 1000, few, a, many, b}'
done
