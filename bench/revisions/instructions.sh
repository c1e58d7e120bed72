#!/usr/bin/env bash
# Instructions per in-process call, counted by callgrind: repeatable on a
# noisy machine where times are not.
#
#   bash bench/revisions/instructions.sh            # the work tree
#
# Runs the `compare` bench (release) under `valgrind --tool=callgrind`
# twice, with 20 000 and 40 000 sequential calls (Moleculer skipped, one
# call with 64 in flight), and prints the difference divided by 20 000:
# the instructions of one typed `greeter.hello` call through the memory
# transport plus one direct call of the method, start-up excluded. Run it
# in two checkouts to compare revisions (CARGO_TARGET_DIR is honoured).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || {
  echo "valgrind is not installed: apt-get install valgrind" >&2
  exit 1
}
exe=$(cargo bench --bench compare --no-run 2>&1 |
  sed -n 's/.*Executable benches\/compare.rs (\(.*\))/\1/p')
[ -n "$exe" ] || { echo "the compare bench did not build" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for calls in 20000 40000; do
  SKIP_MOLECULER=1 ROUNDS=1 CALLS=$calls CALLS64=1 \
    valgrind --tool=callgrind --callgrind-out-file="$out/$calls.out" "$exe" --bench \
    >/dev/null 2>"$out/$calls.err"
done
count() { sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/$1.err"; }
a=$(count 20000)
b=$(count 40000)
echo "$(( (b - a) / 20000 )) instructions per typed in-process call plus one direct call ($(git rev-parse --short HEAD))"
