#!/usr/bin/env bash
# An upgrade nobody notices: starts a MicroFlack fleet (fleet.sh up, in a
# temporary folder, with a virtual host and databases of this run's own),
# runs a load through its gateway (load.js: Socket.IO clients posting and
# receiving, REST readers), rolls every service to a new version one after
# another, then stops the load and prints what it saw. Exit status 0 when
# nothing failed: no failed HTTP request, no post lost, every client
# received every message, no user went offline.
#
#   bash apps/microflack/fleet/upgrade-under-load.sh             # shimeji upgrade
#   bash apps/microflack/fleet/upgrade-under-load.sh --original  # the original
#       MicroFlack's sequence (start, fixed sleep, kill without deregistering):
#       the negative control
#
# Environment: LOAD_CLIENTS (20), LOAD_READERS (4), LOAD_INTERVAL_MS (500),
# UPGRADE_SERVICES (default: users tokens messages push ui), FLEET_INSTANCES
# (2), FLEET_SOAK (1), FLEET_ORIGINAL_SLEEP (5), MICROFLACK_BIN and
# SHIMEJI_BIN (built with the etcd feature; default: a release build),
# SUMMARY (where the JSON summary goes; default: printed only). Needs what
# fleet.sh needs, and Node.js with socket.io-client
# (bash apps/microflack/tests/client/install.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

sequence=shimeji
case ${1:-} in
  --original) sequence=original ;;
  "") ;;
  *)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac

command -v node >/dev/null || {
  echo "missing node: bash apps/microflack/tests/client/install.sh" >&2
  exit 2
}

work=$(mktemp -d)
export MICROFLACK_FLEET=$work/fleet
export FLEET_NAME=mfload_$$_$RANDOM
export FLEET_PORT
FLEET_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
load=
cleanup() {
  [[ -n $load ]] && kill "$load" 2>/dev/null || true
  bash "$here/fleet.sh" down --purge >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

bash "$here/fleet.sh" up

echo "# load: ${LOAD_CLIENTS:-20} Socket.IO clients, ${LOAD_READERS:-4} REST readers, through the gateway"
LOAD_READY_FILE=$work/ready node "$here/load.js" "http://127.0.0.1:$FLEET_PORT" "$work/stop" "$work/summary.json" \
  >"$work/load.out" &
load=$!
for _ in $(seq 1 600); do
  [[ -e $work/ready ]] && break
  kill -0 "$load" 2>/dev/null || break
  sleep 0.1
done
if [[ ! -e $work/ready ]]; then
  echo "the load did not start:" >&2
  cat "$work/load.out" >&2
  exit 1
fi
sleep 3

# shellcheck disable=SC2206
services=(${UPGRADE_SERVICES:-users tokens messages push ui})
started=$(date +%s)
echo "# rolling ${services[*]} ($sequence sequence) while the load runs"
FLEET_SEQUENCE=$sequence bash "$here/fleet.sh" upgrade "${services[@]}"
echo "# roll done in $(($(date +%s) - started)) s"
bash "$here/fleet.sh" status
sleep 3
touch "$work/stop"
status=0
wait "$load" || status=$?
load=
cat "$work/load.out"
[[ -n ${SUMMARY:-} ]] && cp "$work/summary.json" "$SUMMARY"
if ((status == 0)); then
  echo "nothing failed, nothing lost, every client received every message, nobody went offline"
else
  echo "the load saw failures (exit $status)" >&2
fi
exit "$status"
