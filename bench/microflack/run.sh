#!/usr/bin/env bash
# MicroFlack, all five services in one process (embedded transport, SQLite
# in a temporary data folder), on loopback:
#
#   1. idle RSS of the whole app, after start and after the load below
#   2. GET /api/messages with 50 messages: wrk -t2 -cCONNECTIONS -dSECONDS
#   3. post -> updated_model received by CLIENTS Socket.IO clients
#      (bench/microflack/fanout.js, socket.io-client 4): p50/p99/max, after
#      WARMUP posts not counted (their max is printed apart)
#
#   bash bench/microflack/run.sh [SECONDS] [CONNECTIONS] [CLIENTS] [POSTS] [WARMUP]
#
# Defaults: 10 s, 16 connections, 100 clients, 50 posts, 5 warm-up posts.
# Needs wrk, curl, python3 and Node.js with the test clients installed
# (bash apps/microflack/tests/client/install.sh). Builds `microflack` in
# release mode first (MICROFLACK_BIN names a binary already built).
# Everything it started is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-10}
connections=${2:-16}
clients=${3:-100}
posts=${4:-50}
warmup=${5:-5}

for tool in wrk curl python3 node; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool: apt-get install wrk curl python3 nodejs npm" >&2
    exit 2
  }
done
[[ -d apps/microflack/tests/client/node_modules/socket.io-client ]] ||
  bash apps/microflack/tests/client/install.sh >&2

if [[ -n ${MICROFLACK_BIN:-} ]]; then
  microflack=$MICROFLACK_BIN
else
  cargo build --release -p microflack >&2
  target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  microflack="$target/release/microflack"
fi

work=$(mktemp -d)
pid=
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
MICROFLACK_DATA="$work/data" WEB_SERVER_ADDRESS="127.0.0.1:$port" JWT_SECRET_KEY=bench-only RUST_LOG=warn \
  "$microflack" >"$work/microflack.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do curl -fs -o /dev/null "$base/" && break; sleep 0.05; done
rss() { awk '/VmRSS/ {printf "%.1f MB", $2 / 1024}' "/proc/$pid/status"; }

echo "microflack, one process, SQLite; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2)"
sleep 2
echo "idle RSS after start: $(rss)"

curl -fs -o /dev/null -X POST "$base/api/users" -H 'content-type: application/json' \
  -d '{"nickname": "bench", "password": "bench-password"}'
token=$(curl -fs -X POST -u bench:bench-password "$base/api/tokens" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
for n in $(seq 1 50); do
  curl -fs -o /dev/null -X POST "$base/api/messages" -H 'content-type: application/json' \
    -H "authorization: Bearer $token" -d "{\"source\": \"message *$n* of the bench\"}"
done
count=$(curl -fs -H "authorization: Bearer $token" "$base/api/messages" |
  python3 -c 'import json, sys; d = json.load(sys.stdin); print(len(d["messages"]) if isinstance(d, dict) else len(d))')
echo "messages listed: $count"

out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "authorization: Bearer $token" "$base/api/messages")
echo "GET /api/messages (wrk -t2 -c$connections -d${seconds}s): $(awk '/Requests\/sec/ {print $2}' <<<"$out") req/s," \
  "p50 $(awk '$1 == "50%" {print $2}' <<<"$out"), p99 $(awk '$1 == "99%" {print $2}' <<<"$out")," \
  "non-2xx $(awk '/Non-2xx/ {print $NF}' <<<"$out" | grep . || echo 0)"

echo "post -> updated_model, $clients clients, $posts posts ($warmup warm-up posts before):"
NODE_PATH="$PWD/apps/microflack/tests/client/node_modules" node bench/microflack/fanout.js "$base" "$token" "$clients" "$posts" "$warmup"

sleep 2
echo "RSS after the load, idle again: $(rss)"
