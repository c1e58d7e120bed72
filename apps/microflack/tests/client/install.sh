#!/usr/bin/env bash
# Installs the stock Socket.IO clients the push service's tests use, when
# they are not installed yet: socket.io-client 4 (npm, pinned by
# package-lock.json) and python-socketio 5 (a venv here, pinned by
# requirements.txt).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
if [ ! -d node_modules/socket.io-client ]; then
  npm ci --no-audit --no-fund
fi
node -e 'console.log("socket.io-client " + require("socket.io-client/package.json").version)'
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import socketio, websocket' >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
fi
.venv/bin/python -c 'import importlib.metadata as m; print("python-socketio " + m.version("python-socketio"))'
