#!/usr/bin/env bash
# Two builds of microflack side by side: run.sh ROUNDS times on each,
# alternating (so both see the same machine load), then the median of each
# figure per build.
#
#   bash bench/microflack/compare.sh BEFORE_BIN AFTER_BIN [ROUNDS] [run.sh arguments…]
#
# ROUNDS defaults to 3; the run.sh arguments default to its own. Each
# round's full output is kept in a temporary folder, named at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

[[ $# -ge 2 ]] || {
  echo "usage: bash bench/microflack/compare.sh BEFORE_BIN AFTER_BIN [ROUNDS] [run.sh arguments…]" >&2
  exit 2
}
before=$1
after=$2
rounds=${3:-3}
shift $(($# < 3 ? $# : 3))
for bin in "$before" "$after"; do
  [[ -x $bin ]] || {
    echo "not an executable: $bin" >&2
    exit 2
  }
done

out=$(mktemp -d)
for round in $(seq 1 "$rounds"); do
  for side in before after; do
    bin=$before
    [[ $side == after ]] && bin=$after
    echo "round $round, $side, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    MICROFLACK_BIN=$bin bash bench/microflack/run.sh "$@" >"$out/$side-$round.txt"
  done
done

python3 - "$out" "$rounds" <<'PY'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
patterns = {
    "GET req/s": r"GET /api/messages .*?: ([\d.]+) req/s",
    "GET p99": r"GET /api/messages .*? p99 ([\d.]+(?:us|ms|s))",
    "fan-out p50 ms": r"deliveries .*? p50 ([\d.]+) ms",
    "fan-out p99 ms": r"deliveries .*? p99 ([\d.]+) ms",
    "fan-out max ms": r"deliveries .*? max ([\d.]+) ms",
    "warm-up max ms": r"warm-up: .*? max ([\d.]+) ms",
    "RSS after start MB": r"idle RSS after start: ([\d.]+) MB",
    "RSS after load MB": r"RSS after the load, idle again: ([\d.]+) MB",
}
def ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)?", v)
    n = float(m.group(1))
    return n / 1000 if m.group(2) == "us" else n * 1000 if m.group(2) == "s" else n
print(f"{'figure':<20} {'before':>12} {'after':>12}   (medians of {rounds} rounds; each round's figures in {out})")
for name, pattern in patterns.items():
    row = []
    for side in ("before", "after"):
        values = []
        for r in range(1, rounds + 1):
            m = re.search(pattern, open(f"{out}/{side}-{r}.txt").read())
            if m:
                values.append(ms(m.group(1)))
        row.append(f"{statistics.median(values):.2f}" if values else "-")
    unit = " (ms)" if name == "GET p99" else ""
    print(f"{name + unit:<20} {row[0]:>12} {row[1]:>12}")
PY
