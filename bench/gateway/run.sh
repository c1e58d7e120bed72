#!/usr/bin/env bash
# The gateway's cost: wrk against one shimeji HTTP instance directly,
# through `shimeji gateway` (following an etcd registry), and through
# HAProxy 2.6 with the same instance as its one server, once doing the
# header work the gateway does (request id, trace context,
# X-Forwarded-*: the like-for-like row) and once bare; same run, same
# machine, loopback.
#
#   bash bench/gateway/run.sh [SECONDS] [CONNECTIONS] [ROUNDS]
#
# Defaults: 10 s per run, 16 keep-alive connections, 3 rounds (the four
# setups alternate in each round, so noise on the machine hits all alike).
# GATEWAY_WORKERS sets the gateway's --workers and HAProxy's nbthread
# (default: one per core, on both). GATEWAY_BIN runs another `shimeji`
# binary as the gateway (an older build, to compare in the same conditions).
# Prints requests/s and p50/p99 latency of each run and the median per
# setup. Needs etcd, etcdctl, haproxy, wrk and protoc (Debian:
# apt-get install etcd-server etcd-client haproxy wrk protobuf-compiler).
# Builds `shimeji` (feature etcd) and `examples/web` in release mode first.
# Every process it starts is stopped by its PID when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-10}
connections=${2:-16}
rounds=${3:-3}
threads=2
target=${CARGO_TARGET_DIR:-target}

for tool in etcd etcdctl haproxy wrk protoc; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool: apt-get install etcd-server etcd-client haproxy wrk protobuf-compiler" >&2
    exit 2
  }
done

cargo build --release -p shimeji-cli -p shimeji-examples --features shimeji-cli/etcd --bin shimeji --example web >&2
shimeji=${GATEWAY_BIN:-$target/release/shimeji}
web=$target/release/examples/web

# start_etcd_and_notes, free_port, wait_http, haproxy_config, start_haproxy
source bench/gateway/common.sh

# A throwaway etcd and one instance of the notes example, registered by
# hand under a lease.
start_etcd_and_notes b bench-1

# The gateway.
gp=$(free_port)
workers=${GATEWAY_WORKERS:-$(nproc)}
RUST_LOG=warn "$shimeji" gateway --registry "etcd://127.0.0.1:$cp" --listen "127.0.0.1:$gp" --workers "$workers" \
  >"$work/gateway.log" 2>&1 &
gateway_pid=$!
pids+=($gateway_pid)
wait_http "http://127.0.0.1:$gp/notes/1"

# HAProxy with the same instance, twice: "haproxy" does the header work the
# gateway does on every request (the headline: the same work on both
# sides), "haproxy-bare" only forwards (haproxy_config in common.sh).
hp=$(free_port)
start_haproxy haproxy "$hp" 1 "$workers"
full_pid=$haproxy_pid
# The header rules work: a new request id comes back.
curl -sfi "http://127.0.0.1:$hp/notes/1" | grep -qiE '^x-request-id: [0-9a-f-]{32,}' || {
  echo "HAProxy returned no request id: its header rules do not work" >&2
  exit 1
}
bp=$(free_port)
start_haproxy haproxy-bare "$bp" 0 "$workers"
bare_pid=$haproxy_pid

# CPU time (user + system, clock ticks) a process has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wrk's output: requests/s, p50, p99 (ms), non-2xx and socket errors, and
# the CPU time the proxy (pid, when given) used per request.
run() { # name url [pid]
  local out before=0 after=0
  [[ -n ${3:-} ]] && before=$(ticks "$3")
  out=$(wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency "$2")
  [[ -n ${3:-} ]] && after=$(ticks "$3")
  local requests cpu=""
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  if [[ -n ${3:-} && ${requests:-0} -gt 0 ]]; then
    cpu=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" \
      'BEGIN {printf "  CPU %.1f us/request", t * 1e6 / hz / n}')
  fi
  local rps p50 p99 non2xx errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  errors=$(awk '/Socket errors/ {print $0}' <<<"$out")
  printf '%-12s %10s req/s  p50 %8s  p99 %8s  non-2xx %s%s %s\n' "$1" "$rps" "$p50" "$p99" "${non2xx:-0}" "$cpu" "${errors:+($errors)}"
  echo "$1 $rps" >>"$work/rps"
}

echo "wrk -t$threads -c$connections -d${seconds}s, GET /notes/1, $(nproc) cores, gateway workers $workers, HAProxy nbthread $workers (haproxy: the gateway's header work, haproxy-bare: none), load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$rounds"); do
  echo "round $round"
  run direct "http://127.0.0.1:$wp/notes/1"
  run gateway "http://127.0.0.1:$gp/notes/1" "$gateway_pid"
  run haproxy "http://127.0.0.1:$hp/notes/1" "$full_pid"
  run haproxy-bare "http://127.0.0.1:$bp/notes/1" "$bare_pid"
done
echo "median req/s:"
for name in direct gateway haproxy haproxy-bare; do
  awk -v n="$name" '$1 == n {print $2}' "$work/rps" | sort -g |
    awk -v n="$name" '{a[NR]=$1} END {printf "  %-12s %s\n", n, a[int((NR+1)/2)]}'
done
