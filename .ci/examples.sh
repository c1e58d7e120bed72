#!/usr/bin/env bash
# Runs every example the way its header says, as a smoke test, and checks a
# line of what it prints. The ones that serve until a signal are started in
# the background, called (curl, or the `shimeji` command), then stopped with
# SIGTERM and must exit cleanly. A failing example's output is printed; the
# script goes on with the others and exits non-zero at the end.
#
# Builds with the test command's features (`--workspace --all-features`), so
# after `cargo test --workspace --all-features` nothing but the example
# binaries is compiled. The greeter's AMQP run needs RabbitMQ on
# 127.0.0.1:5672 (guest/guest), or AMQP_URI.
set -euo pipefail
cd "$(dirname "$0")/.."

AMQP_URI_FOR_EXAMPLES="${AMQP_URI:-amqp://guest:guest@127.0.0.1:5672}"
unset AMQP_URI WEB_SERVER_ADDRESS METRICS_ADDRESS RUST_LOG

if ! command -v curl >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl
fi

echo "-- build"
cargo build --quiet --workspace --all-features --examples --bins
target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
examples="$target/debug/examples"
shimeji="$target/debug/shimeji"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The output file of the example now running.
out=

# expect LINE...: each LINE is in the output (a fixed string).
expect() {
  local line
  for line in "$@"; do
    if ! grep -qF -- "$line" "$out"; then
      echo "missing from the output: $line"
      return 1
    fi
  done
}

# run_once NAME [ARG...]: runs example NAME to its end (60 s at the most);
# it must exit 0.
run_once() {
  local status=0
  timeout 60 "$examples/$1" "${@:2}" >"$out" 2>&1 || status=$?
  if ((status != 0)); then
    echo "exited with status $status"
    return 1
  fi
}

# start [VAR=VALUE...] NAME: starts example NAME in the background, with
# those variables set; its pid is in $pid.
start() {
  env "${@:1:$#-1}" "$examples/${*: -1}" >"$out" 2>&1 &
  pid=$!
  pids+=("$pid")
}

# await LINE: waits (30 s at the most) until the running example has printed
# LINE (a fixed string); fails at once when the example has exited.
await() {
  local _
  for _ in $(seq 1 300); do
    if grep -qF -- "$1" "$out"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "exited before printing: $1"
      return 1
    fi
    sleep 0.1
  done
  echo "not printed within 30 s: $1"
  return 1
}

# stop: sends SIGTERM to the running example; it must exit 0 within 15 s.
stop() {
  local status=0 _
  kill -TERM "$pid"
  for _ in $(seq 1 150); do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "still running 15 s after SIGTERM"
    return 1
  fi
  wait "$pid" || status=$?
  if ((status != 0)); then
    echo "exited with status $status after SIGTERM"
    return 1
  fi
}

# status_of URL [CURL_ARG...]: the HTTP status of a request; its body is in
# $work/body.
status_of() {
  curl --silent --max-time 10 --output "$work/body" --write-out '%{http_code}' "$@"
}

greeter() {
  run_once greeter &&
    expect 'greeter.hello("Ada") -> "Hello, Ada!"' \
      'event greeter.greeted handled by guestbook.sign' \
      'guestbook.guests() -> ["Ada"]' \
      'stopped'
}

greeter_amqp() {
  start AMQP_URI="$AMQP_URI_FOR_EXAMPLES" RUST_LOG=shimeji=info greeter
  await 'service started' || return 1
  local reply
  if ! reply=$(AMQP_URI="$AMQP_URI_FOR_EXAMPLES" timeout 30 "$shimeji" call greeter.hello '{"name":"Ada"}' 2>&1); then
    echo "shimeji call greeter.hello failed: $reply"
    return 1
  fi
  if [[ $reply != '"Hello, Ada!"' ]]; then
    echo "shimeji call greeter.hello printed $reply, not \"Hello, Ada!\""
    return 1
  fi
  stop && expect 'serving greeter over amqp://' 'stopped'
}

shop() {
  run_once shop &&
    expect 'The shop opens on the memory transport' \
      '-> placed, receipt rcpt-1-' \
      '-> refused, exc_type "Declined"' \
      'emails#' \
      'The shop is closed.'
}

kv_store() {
  run_once kv_store &&
    expect 'counter.get("apples") -> Some(3)' \
      'counter.incr(key=7) -> error IncorrectSignature' \
      'the per-call hooks counted Stats { started: 9, failed: 1, finished: 9 }'
}

observability() {
  run_once observability &&
    expect 'POST /orders -> HTTP/1.1 201 Created' \
      '"request_id":"req-7"' \
      'shimeji_entrypoint_calls_total{service="orders",entrypoint="place",outcome="ok"} 1' \
      'GET /health/ready -> {"ready":true'
}

web() {
  start WEB_SERVER_ADDRESS=127.0.0.1:0 web
  await 'notes listening on http://' || return 1
  local address status
  address=$(sed -n 's|^notes listening on http://\([^ ]*\) .*|\1|p' "$out" | head -n 1)
  status=$(status_of "http://$address/notes/1")
  if [[ $status != 200 ]] || ! grep -qF 'try shimeji' "$work/body"; then
    echo "GET /notes/1 -> $status $(cat "$work/body")"
    return 1
  fi
  status=$(status_of "http://$address/notes" -X POST -H 'content-type: application/json' \
    -d '{"text": "buy milk"}')
  if [[ $status != 201 ]] || ! grep -qF 'buy milk' "$work/body"; then
    echo "POST /notes -> $status $(cat "$work/body")"
    return 1
  fi
  status=$(status_of "http://$address/notes/99")
  if [[ $status != 404 ]]; then
    echo "GET /notes/99 -> $status $(cat "$work/body")"
    return 1
  fi
  stop
}

# Two instances of `web` behind the gateway, upgraded under traffic; the
# script checks that no request failed.
platform() {
  SHIMEJI_BIN="$shimeji" WEB_BIN="$examples/web" bash examples/platform/run.sh >"$out" 2>&1 &&
    expect 'upgrade of notes done: 2 instance(s) replaced' 'upgrade done with no failed request'
}

failed=()
for example in greeter greeter_amqp shop kv_store observability web platform; do
  out="$work/$example.out"
  : >"$out"
  started=$SECONDS
  if "$example" >"$work/why" 2>&1; then
    echo "-- $example: ok ($((SECONDS - started)) s)"
  else
    echo "-- $example: FAILED: $(cat "$work/why")"
    echo "---- its output:"
    cat "$out"
    echo "----"
    failed+=("$example")
  fi
done

if ((${#failed[@]})); then
  echo "examples that fail: ${failed[*]}" >&2
  exit 1
fi
echo "every example runs and prints what it should"
