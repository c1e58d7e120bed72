#!/usr/bin/env bash
# The in-memory benches of two revisions, side by side in one run.
#
#   bash bench/revisions/run.sh BASE [ROUNDS]
#
# BASE is any git revision (a commit, a tag, `main~5`); the other side is
# the work tree as it is. Both are built in release mode (BASE in its own
# worktree and target directory under target/revisions/), then their
# `compare` bench (shimeji's typed client against a direct call; Moleculer
# skipped) and their `memory` criterion benches run in alternation, ROUNDS
# times (default 5), so noise on the machine hits both alike. It prints
# the median of each figure and the ratio new/base (above 1: new is
# faster for calls/s, slower for times). A cold run builds twice in
# release mode: about 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."

base_rev=${1:?usage: bash bench/revisions/run.sh BASE [ROUNDS]}
rounds=${2:-5}
calls=${CALLS:-200000}
calls64=${CALLS64:-1000000}
root=$(pwd)
out=target/revisions
mkdir -p "$out"
base_commit=$(git rev-parse --short "$base_rev")
# BASE_TREE / BASE_TARGET: a checkout of BASE and a target directory
# already built from it, to reuse; NEW_TARGET: the work tree's.
base_tree=${BASE_TREE:-"$root/$out/tree-$base_commit"}
base_target=${BASE_TARGET:-"$root/$out/target-base"}
new_target=${NEW_TARGET:-"$root/target"}

if [ ! -d "$base_tree" ]; then
  git worktree add --detach "$base_tree" "$base_commit" >/dev/null
fi

# Builds the benches of the tree in $1 into target dir $2 and prints the
# paths of the compare and memory executables.
build() {
  (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench --bench compare --bench memory --no-run 2>&1) |
    tee "$out/build-$(basename "$2").log" |
    sed -n 's/.*Executable benches\/\(compare\|memory\)\.rs (\(.*\))/\1 \2/p'
}

echo "== building $base_commit (base) and the work tree (new) in release mode"
declare -A exe
while read -r name path; do exe[base-$name]=$path; done < <(build "$base_tree" "$base_target")
while read -r name path; do exe[new-$name]=$path; done < <(build "$root" "$new_target")
for k in base-compare base-memory new-compare new-memory; do
  [ -n "${exe[$k]:-}" ] || { echo "no executable for $k: see $out/build-*.log" >&2; exit 1; }
done

results="$out/results-$base_commit.txt"
: > "$results"
for round in $(seq 1 "$rounds"); do
  for side in base new; do
    tree=$base_tree; [ "$side" = new ] && tree=$root
    # compare.rs finds nothing outside its tree with Moleculer skipped.
    (cd "$tree" && SKIP_MOLECULER=1 ROUNDS=1 CALLS=$calls CALLS64=$calls64 \
      "${exe[$side-compare]}" --bench 2>/dev/null) |
      sed -n "s/^| shimeji typed client *|/$side compare /p" >> "$results"
    (cd "$tree" && "${exe[$side-memory]}" --bench --warm-up-time 1 --measurement-time 3 \
      --noplot 2>/dev/null) |
      python3 -c '
import re, sys
side = sys.argv[1]
name = None
for line in sys.stdin:
    # A bench id is group/name; a long one stands on a line of its own.
    if line.strip() and not line[0].isspace() and "time:" not in line and "/" in line.split()[0]:
        name = line.split()[0]
    m = re.search(r"(\S+)\s+time:\s+\[", line)
    if m and m.group(1) not in ("time:", "change:"):
        name = m.group(1)
    # (criterion also prints "change: time: [-1.2% …]" against its last run)
    m2 = re.search(r"time:\s+\[\S+ (?:ps|ns|µs|us|ms|s) (\S+) (ps|ns|µs|us|ms|s)\b", line)
    if m2 and name:
        value, unit = float(m2.group(1)), m2.group(2)
        scale = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}[unit]
        print(f"{side} memory {name} {value * scale:.1f}")
' "$side" >> "$results"
  done
  echo "round $round/$rounds done" >&2
done

python3 - "$results" "$base_commit" "$rounds" "$calls" "$calls64" <<'PY'
import statistics, sys
path, base, rounds, calls, calls64 = sys.argv[1:]
rows = {}
for line in open(path):
    parts = line.split()
    side, kind = parts[0], parts[1]
    if kind == "compare":
        cells = [c.strip() for c in " ".join(parts[2:]).split("|") if c.strip()]
        seq, p50, p99, c64 = (float(c) for c in cells[:4])
        for name, v in (("typed client, sequential (calls/s)", seq),
                        ("typed client, p50 (µs)", p50),
                        ("typed client, p99 (µs)", p99),
                        ("typed client, 64 in flight (calls/s)", c64)):
            rows.setdefault(name, {}).setdefault(side, []).append(v)
    else:
        rows.setdefault(f"criterion {parts[2]} (ns)", {}).setdefault(side, []).append(float(parts[3]))
print(f"\nbase {base} against the work tree: medians of {rounds} alternated rounds "
      f"(compare: {calls} sequential calls, {calls64} with 64 in flight; criterion: 1 s warm-up, 3 s measurement)\n")
print("| figure | base | new | new / base |")
print("|---|---:|---:|---:|")
for name, sides in rows.items():
    b, n = statistics.median(sides.get("base", [float("nan")])), statistics.median(sides.get("new", [float("nan")]))
    print(f"| {name} | {b:,.2f} | {n:,.2f} | {n / b:.3f} |")
PY
