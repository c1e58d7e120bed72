#!/usr/bin/env bash
# Failed requests during a rolling upgrade, per front, on loopback:
#
#   front = `shimeji gateway`
#   front = HAProxy 2.6 on the sample haproxy.cfg, its servers kept by
#           `shimeji haproxy-sync` (runtime API, no reload)
#
#   bash bench/gateway/roll.sh [CONNECTIONS] [ROLLS]
#
# Defaults: 16 keep-alive connections (wrk -t2), 1 roll per front. For each
# front in turn, with a fresh etcd and only that front running: two
# instances of the `web` example (service `notes`, SERVICE_VERSION=1,
# METRICS_ADDRESS set) register themselves; wrk sends GET /notes/1 and
# POST /notes in turn through the front (bench/gateway/roll.lua, which also
# counts the answers by status: GET answers 200, POST 201); after LEAD
# seconds
#
#   shimeji upgrade notes --registry etcd://… --soak SOAK -- \
#     env SERVICE_VERSION=2 WEB_SERVER_ADDRESS=127.0.0.1:0 METRICS_ADDRESS=127.0.0.1:0 web
#
# rolls both instances, one at a time; wrk runs TAIL seconds more and is
# stopped (SIGINT: it prints its summary), so the load covers the whole
# roll. With ROLLS > 1 the roll is repeated on the same front (version 2 →
# 3 → …). Prints per roll: how long the roll took and when it ran within
# the load, requests, req/s and latency (p50, p99, max), non-2xx, socket
# errors, answers by status; then the totals per front. wrk's "timeout"
# socket errors are answers slower than wrk's --timeout (10 s here), not
# lost requests: the answers by status count them too. Target: 0 failed
# requests in every roll. Exits 1 when a request failed, a socket error was
# counted, or a roll did not end with two instances of the new version.
#
# Environment: SOAK (default 1 s), LEAD and TAIL (2 s), GATEWAY_WORKERS (one
# per core), FRONTS (the fronts and their order, default "gateway haproxy"),
# KEEP (when set, every log is kept and its directory printed), SHIMEJI_BIN
# and WEB_BIN (`shimeji` and the `web` example, built with feature etcd;
# else both are built in release mode, which needs protoc). A roll slower
# than 2 × SOAK + 3 s gets its steps printed, stamped.
# Needs etcd, etcdctl, haproxy, wrk, curl, python3 (Debian: apt-get install
# etcd-server etcd-client haproxy wrk curl python3 protobuf-compiler).
# Every process it starts, and every instance the upgrades started, is
# stopped by its PID when it ends.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/../.."

connections=${1:-16}
rolls=${2:-1}
soak=${SOAK:-1}
lead=${LEAD:-2}
tail_s=${TAIL:-2}
workers=${GATEWAY_WORKERS:-$(nproc)}
threads=2
# wrk counts an answer slower than this as a "timeout" socket error (the
# request still got its answer, which the status counts show).
wrk_timeout=10
read -r -a fronts <<<"${FRONTS:-gateway haproxy}"
for front in "${fronts[@]}"; do
  [[ $front == gateway || $front == haproxy ]] || { echo "FRONTS: gateway and/or haproxy, not $front" >&2; exit 2; }
done

install_hint="apt-get install etcd-server etcd-client haproxy wrk curl python3 protobuf-compiler"
haproxy=$(command -v haproxy || true)
[[ -z $haproxy && -x /usr/sbin/haproxy ]] && haproxy=/usr/sbin/haproxy
[[ -n $haproxy ]] || { echo "missing haproxy: $install_hint" >&2; exit 2; }
for tool in etcd etcdctl wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: $install_hint" >&2; exit 2; }
done

if [[ -n ${SHIMEJI_BIN:-} && -n ${WEB_BIN:-} ]]; then
  shimeji=$SHIMEJI_BIN
  web=$WEB_BIN
else
  command -v protoc >/dev/null || { echo "missing protoc (to build the etcd feature): $install_hint" >&2; exit 2; }
  cargo build --release -p shimeji-cli -p shimeji-examples --features shimeji-cli/etcd \
    --bin shimeji --example web >&2
  target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  shimeji=$target/release/shimeji
  web=$target/release/examples/web
fi

work=$(mktemp -d)
pids=()
etcd_address=
cleanup() {
  # The instances the upgrades started are not children of this script:
  # those still registered, and those the upgrades' state files list.
  for pid in $(instance_pids) $(started_pids); do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n ${KEEP:-} ]]; then
    echo "logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stamp FROM: each line of stdin, prefixed with the seconds since FROM.
stamp() {
  local line
  while IFS= read -r line; do
    printf '%s %s\n' "$(seconds "$1" "$EPOCHREALTIME")" "$line"
  done
}
# seconds FROM TO: TO − FROM ($EPOCHREALTIME values), one decimal.
seconds() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }
# free_port, wait_http, start_etcd
source bench/gateway/common.sh

# "instance_id version pid" of every registered instance of notes.
instances() {
  [[ -n $etcd_address ]] || return 0
  ETCDCTL_API=3 etcdctl --endpoints "$etcd_address" --command-timeout 2s \
    get --prefix /shimeji/v1/instances/notes/ --print-value-only 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if line:
        r = json.loads(line)
        print(r["instance_id"], r["version"], r["pid"])' || true
}
instance_pids() { instances | cut -d' ' -f3; }
# The pids of the processes the upgrades started (their state files).
started_pids() {
  cat "$work"/upgrade-*/notes.upgrade.json 2>/dev/null | python3 -c '
import json, sys
def pids(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "pid" and isinstance(x, int):
                yield x
            else:
                yield from pids(x)
    elif isinstance(v, list):
        for x in v:
            yield from pids(x)
for doc in sys.stdin.read().replace("}{", "}\n{").splitlines():
    if doc.strip():
        for pid in set(pids(json.loads(doc).get("started", []))):
            print(pid)' 2>/dev/null || true
}
await_instances() { # count version
  for _ in $(seq 1 200); do
    [[ $(instances | awk -v v="$2" '$2 == v' | wc -l) == "$1" && $(instances | wc -l) == "$1" ]] && return 0
    sleep 0.05
  done
  echo "expected $1 registered instance(s) of notes at version $2, found: $(instances | tr '\n' ';')" >&2
  exit 1
}
# Stops PID (not necessarily a child) with SIGTERM and waits for it (30 s).
stop_pid() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 600); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.05
  done
  echo "process $1 did not stop within 30 s of SIGTERM" >&2
  exit 1
}

echo "roll: failed requests during a rolling upgrade of 2 instances, per front"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (start)"
echo "versions: $("$haproxy" -v | head -n 1 | cut -d' ' -f1-3), etcd $(etcd --version | awk '/etcd Version/ {print $3}'), $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2), $("$shimeji" --version)"
echo "load: wrk -t$threads -c$connections --timeout ${wrk_timeout}s (keep-alive), GET /notes/1 and POST /notes in turn (roll.lua); starts ${lead} s before the roll, ends ${tail_s} s after"
echo "roll: shimeji upgrade --soak $soak; gateway --workers $workers; HAProxy: sample haproxy.cfg (balance leastconn), haproxy-sync defaults"
echo

failed=0
declare -A total_requests total_non2xx total_socket
for front in "${fronts[@]}"; do
  phase_pids=()

  # A fresh etcd: no router report of the previous front is left in it.
  start_etcd r "$work/etcd-$front" "$work/etcd-$front.log"
  pids+=($etcd_pid)
  cp=$etcd_port
  etcd_address=127.0.0.1:$cp
  registry=etcd://$etcd_address

  # The front.
  port=$(free_port)
  if [[ $front == gateway ]]; then
    RUST_LOG=warn "$shimeji" gateway --registry "$registry" --listen "127.0.0.1:$port" \
      --workers "$workers" >"$work/gateway.log" 2>&1 &
    pids+=($!); phase_pids+=($!)
  else
    SHIMEJI_HAPROXY_SOCKET=$work/admin.sock SHIMEJI_HAPROXY_BIND=127.0.0.1:$port \
      "$haproxy" -db -f crates/shimeji-cli/haproxy/haproxy.cfg >"$work/haproxy.log" 2>&1 &
    pids+=($!); phase_pids+=($!)
    for _ in $(seq 1 200); do [[ -S $work/admin.sock ]] && break; sleep 0.05; done
    RUST_LOG=warn "$shimeji" haproxy-sync --registry "$registry" --haproxy-socket "$work/admin.sock" \
      >"$work/haproxy-sync.log" 2>&1 &
    pids+=($!); phase_pids+=($!)
  fi

  # Two instances, version 1, registering themselves.
  for n in 1 2; do
    REGISTRY=$registry SERVICE_VERSION=1 WEB_SERVER_ADDRESS=127.0.0.1:0 METRICS_ADDRESS=127.0.0.1:0 \
      RUST_LOG=warn "$web" >"$work/web-$front-$n.log" 2>&1 &
    pids+=($!)
  done
  await_instances 2 1
  wait_http "http://127.0.0.1:$port/notes/1"

  for roll in $(seq 1 "$rolls"); do
    from=$roll
    to=$((roll + 1))
    wrk -t"$threads" -c"$connections" -d300s --timeout "${wrk_timeout}s" --latency -s bench/gateway/roll.lua \
      "http://127.0.0.1:$port/" \
      >"$work/wrk-$front-$roll" 2>&1 &
    wrk_pid=$!
    pids+=($wrk_pid)
    wrk_started=$EPOCHREALTIME
    sleep "$lead"
    started=$EPOCHREALTIME
    upgrade_status=0
    # In the background, so that a signal to this script is handled at once;
    # its progress lines stamped with the time since it started.
    "$shimeji" upgrade notes --registry "$registry" --log-dir "$work/upgrade-$front-$roll" --soak "$soak" \
      -- env SERVICE_VERSION=$to WEB_SERVER_ADDRESS=127.0.0.1:0 METRICS_ADDRESS=127.0.0.1:0 RUST_LOG=warn "$web" \
      > >(stamp "$started" >"$work/upgrade-$front-$roll.out") 2>&1 &
    pids+=($!)
    wait $! || upgrade_status=$?
    ended=$EPOCHREALTIME
    sleep "$tail_s"
    stopping=$EPOCHREALTIME
    kill -INT "$wrk_pid"
    wait "$wrk_pid" || true
    stopped=$EPOCHREALTIME
    took=$(seconds "$started" "$ended")
    slow=$(awk -v t="$took" -v s="$soak" 'BEGIN {print (t > 2 * s + 3) ? 1 : 0}')
    timeline="s after wrk started: roll $(seconds "$wrk_started" "$started")–$(seconds "$wrk_started" "$ended"), SIGINT $(seconds "$wrk_started" "$stopping"), wrk exited $(seconds "$wrk_started" "$stopped")"
    out=$(cat "$work/wrk-$front-$roll")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    ran=$(awk '/requests in/ {sub(",", "", $4); print $4}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    max=$(awk '$1 == "Latency" {print $4}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    socket=$(awk -F': ' '/Socket errors/ {print $2}' <<<"$out")
    statuses=$(awk '/^status / {printf "%s%s×%s", sep, $3, $2; sep=", "}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    printf '%-8s roll %d (v%d → v%d, %s s; %s; wrk ran %s): %s requests (%s req/s; latency p50 %s, p99 %s, max %s), non-2xx %s, socket errors: %s; answers: %s\n' \
      "$front" "$roll" "$from" "$to" "$took" "$timeline" "${ran:-?}" "${requests:-?}" "${rps:-?}" "${p50:-?}" "${p99:-?}" "${max:-?}" \
      "${non2xx:-0}" "${socket:-none}" "${statuses:-none}"
    total_requests[$front]=$(( ${total_requests[$front]:-0} + ${requests:-0} ))
    total_non2xx[$front]=$(( ${total_non2xx[$front]:-0} + ${non2xx:-0} ))
    [[ -n $socket ]] && total_socket[$front]="${total_socket[$front]:-}[roll $roll: $socket] "
    if ((slow)); then
      echo "$front roll $roll took more than 2 × soak + 3 s; its steps (s after it started):"
      sed 's/^/    /' "$work/upgrade-$front-$roll.out"
    fi
    if [[ -z $requests || -n $non2xx || -n $socket ]]; then
      failed=1
      echo "$front roll $roll: wrk's output:" >&2
      echo "$out" >&2
    fi
    if ((upgrade_status != 0)); then
      failed=1
      echo "$front roll $roll: shimeji upgrade exited $upgrade_status:" >&2
      tail -n 30 "$work/upgrade-$front-$roll.out" >&2
      break
    fi
    await_instances 2 "$to"
  done

  # Stop this front's instances (they deregister and wait for the front),
  # then the front and etcd.
  for pid in $(instance_pids); do stop_pid "$pid"; done
  for pid in "${phase_pids[@]}"; do stop_pid "$pid"; done
  stop_pid "$etcd_pid"
  etcd_address=
done

echo
for front in "${fronts[@]}"; do
  printf '%-8s total: %d requests, non-2xx %d, socket errors: %s\n' "$front" "${total_requests[$front]}" \
    "${total_non2xx[$front]}" "${total_socket[$front]:-none}"
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) (end)"
exit $failed
