#!/usr/bin/env bash
# Registry → routing propagation: how long a front keeps sending requests to
# an instance after its record left the registry. Both fronts in the same
# run, on loopback, following one etcd:
#
#   shimeji gateway
#   HAProxy 2.6 on the sample haproxy.cfg, its servers kept by
#   `shimeji haproxy-sync` (runtime API, no reload)
#
#   bash bench/gateway/propagation.sh [ROUNDS] [CONNECTIONS]
#
# Defaults: 20 rounds, 8 keep-alive connections per front. Two upstreams
# (bench/gateway/upstream.py, which logs the wall-clock arrival time and path
# of every request) are registered by hand under one lease (granted and kept
# alive with etcdctl) as instances of service `notes` (route GET
# /notes/{id}), in the record format of the registry (JSON at
# /shimeji/v1/instances/notes/<id>). One wrk per front keeps load for the
# whole run: GET /notes/gateway through the gateway, GET /notes/haproxy
# through HAProxy, so an upstream's log tells which front sent each request.
# Each round, on one upstream (the two take turns; bench/gateway/propagation.py
# runs the rounds):
#
#   t0 = now; delete its key; t1 = now (right after etcd answered)
#   wait WINDOW seconds (nothing registers it meanwhile)
#   register it again under a new instance id, wait until both fronts send
#   to it, wait SETTLE seconds
#
# The key is deleted through etcd's JSON gateway over one kept-alive
# connection, so t1 − t0 is a round trip to etcd (a few ms, printed), not
# the 50–100 ms it takes to start and exit `etcdctl del` on a busy machine,
# which would blur the figure more than the target allows.
# Propagation of a front = (last request of that front that reached the
# upstream before it was registered again) − t1, in ms. It can be slightly
# negative: etcd notifies watchers as it answers the deletion, and a front
# can apply it before the answer is back. A round counts only if the front
# was sending to the upstream in the 200 ms before t0. Also printed:
# registration → first request of each front, and the requests, non-2xx
# answers and socket errors of each wrk over the whole run (deregistering a
# live instance must fail nothing).
#
# Prints p50/p99/max per front (nearest rank: with 20 rounds p99 is the
# maximum) against the target p99 ≤ 50 ms. Exits 1 when a request failed or
# a round could not be measured.
#
# Environment: WINDOW (default 1 s), SETTLE (0.5 s), GATEWAY_WORKERS (one per
# core), SHIMEJI_BIN (a `shimeji` built with feature etcd; else it is built
# in release mode, which needs protoc).
# Needs etcd, etcdctl, haproxy, wrk, curl, python3 (Debian: apt-get install
# etcd-server etcd-client haproxy wrk curl python3 protobuf-compiler).
# Every process it starts is stopped by its PID when it ends.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/../.."

rounds=${1:-20}
connections=${2:-8}
window=${WINDOW:-1}
settle=${SETTLE:-0.5}
workers=${GATEWAY_WORKERS:-$(nproc)}

install_hint="apt-get install etcd-server etcd-client haproxy wrk curl python3 protobuf-compiler"
haproxy=$(command -v haproxy || true)
[[ -z $haproxy && -x /usr/sbin/haproxy ]] && haproxy=/usr/sbin/haproxy
[[ -n $haproxy ]] || { echo "missing haproxy: $install_hint" >&2; exit 2; }
for tool in etcd etcdctl wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: $install_hint" >&2; exit 2; }
done

if [[ -n ${SHIMEJI_BIN:-} ]]; then
  shimeji=$SHIMEJI_BIN
else
  command -v protoc >/dev/null || { echo "missing protoc (to build the etcd feature): $install_hint" >&2; exit 2; }
  cargo build --release -p shimeji-cli --features shimeji-cli/etcd --bin shimeji >&2
  target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  shimeji=$target/release/shimeji
fi

work=$(mktemp -d)
pids=()
wrk_pids=()
cleanup() {
  for pid in "${wrk_pids[@]}" "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port, wait_http, start_etcd
source bench/gateway/common.sh

# etcd, throwaway: no fsync, short election (a single member).
start_etcd p "$work/etcd" "$work/etcd.log"
pids+=($etcd_pid)
cp=$etcd_port
export ETCDCTL_API=3
ctl() { etcdctl --endpoints "127.0.0.1:$cp" "$@"; }
lease=$(ctl lease grant 60 | awk '{print $2}')
# etcdctl itself, not through ctl: $! must be its pid, not a subshell's.
etcdctl --endpoints "127.0.0.1:$cp" lease keep-alive "$lease" >/dev/null 2>&1 &
pids+=($!)

# The two upstreams, a and b.
for u in a b; do
  free_port >"$work/$u.port"
  python3 bench/gateway/upstream.py "$(cat "$work/$u.port")" "$work/$u.log" 2>"$work/$u.err" &
  echo $! >"$work/$u.pid"
  pids+=($!)
  wait_http "http://127.0.0.1:$(cat "$work/$u.port")/probe"
done

# The fronts.
gp=$(free_port)
RUST_LOG=warn "$shimeji" gateway --registry "etcd://127.0.0.1:$cp" --listen "127.0.0.1:$gp" \
  --workers "$workers" >"$work/gateway.log" 2>&1 &
pids+=($!)
hp=$(free_port)
SHIMEJI_HAPROXY_SOCKET=$work/admin.sock SHIMEJI_HAPROXY_BIND=127.0.0.1:$hp \
  "$haproxy" -db -f crates/shimeji-cli/haproxy/haproxy.cfg >"$work/haproxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do [[ -S $work/admin.sock ]] && break; sleep 0.05; done
RUST_LOG=warn "$shimeji" haproxy-sync --registry "etcd://127.0.0.1:$cp" \
  --haproxy-socket "$work/admin.sock" >"$work/haproxy-sync.log" 2>&1 &
pids+=($!)

python3 bench/gateway/propagation.py setup "$work" "127.0.0.1:$cp" "$lease" \
  "http://127.0.0.1:$gp/notes/gateway" "http://127.0.0.1:$hp/notes/haproxy"

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "propagation: registry → routing, $rounds rounds, window ${window} s, settle ${settle} s"
echo "machine: $(nproc) cores, load average $load_start (start)"
echo "versions: $("$haproxy" -v | head -n 1 | cut -d' ' -f1-3), etcd $(etcd --version | awk '/etcd Version/ {print $3}'), $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2), $("$shimeji" --version), $(python3 --version)"
echo "load: per front wrk -t1 -c$connections (keep-alive), GET /notes/<front>; gateway --workers $workers; HAProxy: sample haproxy.cfg (balance leastconn), haproxy-sync --resync 1"

# Load on both fronts for the whole run, stopped with SIGINT (wrk then
# prints its summary); -d only bounds it.
cap=$((rounds * (${window%.*} + 10) + 60))
for front in gateway haproxy; do
  if [[ $front == gateway ]]; then fp=$gp; else fp=$hp; fi
  wrk -t1 -c"$connections" -d"${cap}s" "http://127.0.0.1:$fp/notes/$front" >"$work/wrk-$front" 2>&1 &
  wrk_pids+=($!)
done

# In the background, so that a signal to this script is handled at once.
status=0
python3 bench/gateway/propagation.py rounds "$work" "127.0.0.1:$cp" "$lease" "$rounds" "$window" "$settle" &
pids+=($!)
wait $! || status=$?
for p in "${wrk_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for p in "${wrk_pids[@]}"; do wait "$p" || true; done
wrk_pids=()
if ((status == 0)); then
  python3 bench/gateway/propagation.py report "$work" "$window" || status=$?
fi
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) (end)"
exit $status
