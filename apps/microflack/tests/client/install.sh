#!/usr/bin/env bash
# Installs the Socket.IO client the push service's tests use (npm, pinned by
# package-lock.json), when it is not installed yet.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
if [ ! -d node_modules/socket.io-client ]; then
  npm ci --no-audit --no-fund
fi
node -e 'console.log("socket.io-client " + require("socket.io-client/package.json").version)'
