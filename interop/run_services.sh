#!/usr/bin/env bash
# Runs every interop service (pyecho, pyrelay, pyevents, pybench) in one `nameko run`.
# Works from any cwd; exec's nameko so $! / the pid is the nameko process (SIGTERM = graceful stop).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::Warning:nameko.cli.commands}"
exec "$HERE/.venv/bin/nameko" run --config "$HERE/config.yaml" services "$@"
