#!/usr/bin/env bash
# Installs what the browser tests need, when it is missing: Chromium
# (Debian's `chromium` package), Node.js and npm, and playwright-core
# (npm, pinned by package-lock.json). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
missing=()
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund
fi
"${CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null | sed -n 1p
node -e 'console.log("playwright-core " + require("playwright-core/package.json").version)'
