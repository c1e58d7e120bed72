#!/usr/bin/env bash
# Instructions per in-process call, counted by callgrind: repeatable on a
# noisy machine where times are not.
#
#   bash bench/revisions/instructions.sh            # the work tree
#   KEEP=dir bash bench/revisions/instructions.sh   # keep the callgrind files in dir
#
# Runs the `compare` bench (release, shimeji on the current-thread runtime
# only, no latency pass) under `valgrind --tool=callgrind` with N and 2N
# calls, one at a time and then with 64 in flight, and prints the
# difference divided by the calls it adds (N plus the tenth of N the bench
# runs first to warm up): the instructions of one typed `greeter.hello`
# call through the memory transport, start-up excluded. The same for the
# method called directly gives what the call itself costs without the
# framework. Run it in two checkouts to compare revisions
# (CARGO_TARGET_DIR is honoured).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || {
  echo "valgrind is not installed: apt-get install valgrind" >&2
  exit 1
}
exe=$(cargo bench --bench compare --no-run 2>&1 |
  sed -n 's/.*Executable benches\/compare.rs (\(.*\))/\1/p')
[ -n "$exe" ] || { echo "the compare bench did not build" >&2; exit 1; }
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$out"' EXIT
n=20000
count() { sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/$1.err"; }
per_call() { # contender, mode (seq|c64)
  for calls in $n $((2 * n)); do
    if [ "$2" = seq ]; then seq=$calls c64=1; else seq=1 c64=$calls; fi
    CONTENDERS=$1 LATENCY_CALLS=0 ROUNDS=1 CALLS=$seq CALLS64=$c64 \
      valgrind --tool=callgrind --callgrind-out-file="$out/$1-$2-$calls.out" "$exe" --bench \
      >/dev/null 2>"$out/$1-$2-$calls.err"
  done
  echo $(( ($(count "$1-$2-$((2 * n))") - $(count "$1-$2-$n")) * 10 / (11 * n) ))
}
rev=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- crates benches || rev="$rev+changes"
echo "instructions per call ($rev):"
echo "  shimeji typed client, one at a time:   $(per_call current seq)"
echo "  shimeji typed client, 64 in flight:    $(per_call current c64)"
echo "  method called directly, one at a time: $(per_call direct seq)"
