#!/usr/bin/env bash
# Idempotent: creates interop/.venv (if missing) and installs the pinned Nameko stack.
# Prints the path of the venv's python on stdout. Works from any cwd.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" >&2
fi
# skip pip entirely when everything pinned is already installed
if ! "$VENV/bin/python" - "$HERE/requirements.txt" >/dev/null 2>&1 <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    if version(name.strip()) != want.strip():
        sys.exit(1)
PYEOF
then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$HERE/requirements.txt" >&2
fi
echo "$VENV/bin/python"
