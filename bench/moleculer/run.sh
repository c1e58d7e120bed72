#!/usr/bin/env bash
# Run the Moleculer peer benchmark. Prints one JSON line on stdout.
# Env: CALLS (sequential, default 200000), CALLS64 (concurrency 64, default 500000), ROUNDS (default 3).
set -euo pipefail
case "${BASH_SOURCE[0]}" in */*) cd "${BASH_SOURCE[0]%/*}" ;; esac

for tool in node npm; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "bench/moleculer: '$tool' not found in PATH; install Node.js (>= 18) to run this benchmark" >&2
		exit 1
	fi
done

if [ ! -d node_modules/moleculer ]; then
	npm ci --no-audit --no-fund >&2
fi

exec node bench.js
