#!/usr/bin/env bash
# Runs every cargo-fuzz target (or those named) for a bounded time, one at a
# time, each in one process on one core.
#
#   fuzz/run.sh                      every target, FUZZ_SECONDS (60) each
#   FUZZ_SECONDS=600 fuzz/run.sh binding traceparent
#   fuzz/run.sh --regressions        replays fuzz/regressions/<target>/* once
#   FUZZ_KEEP_GOING=1 fuzz/run.sh amqp_request
#                                    goes on past crashes (libFuzzer's fork
#                                    mode, one job), saving each one
#
# Installs the nightly toolchain and cargo-fuzz when they are missing. The
# corpus grows in fuzz/corpus/<target> (started from fuzz/seeds/<target>),
# crashes land in fuzz/artifacts/<target>, logs in fuzz/logs/<target>.log.
# Exits non-zero when a target crashed (or a regression input still does).
set -euo pipefail

cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-60}

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

mode=fuzz
if [[ ${1:-} == --regressions ]]; then
    mode=regressions
    shift
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Extra libFuzzer flags per target. The AMQP target needs room for header
# tables nested thousands of levels deep.
flags_for() {
    case $1 in
        amqp_request) echo "-max_len=131072" ;;
        *) echo "-max_len=16384" ;;
    esac
}

for target in "${targets[@]}"; do # Past a crash: a child process per round, one at a time, crashes saved.
keep_going() {
    if [[ ${FUZZ_KEEP_GOING:-0} == 1 ]]; then
        echo "-fork=1 -ignore_crashes=1"
    fi
}

cargo +nightly fuzz build -O "$target"; done

mkdir -p logs
failed=()
for target in "${targets[@]}"; do
    if [[ $mode == regressions ]]; then
        inputs=(regressions/"$target"/*)
        if [[ ! -e ${inputs[0]} ]]; then
            echo "== $target: no regression inputs"
            continue
        fi
        echo "== $target: replaying ${#inputs[@]} regression input(s)"
        if ! cargo +nightly fuzz run -O "$target" "${inputs[@]}" -- -runs=1 \
            >"logs/$target.regressions.log" 2>&1; then
            echo "   FAILED: see fuzz/logs/$target.regressions.log"
            failed+=("$target")
        fi
        continue
    fi
    mkdir -p "corpus/$target"
    corpora=("corpus/$target")
    [[ -d seeds/$target ]] && corpora+=("seeds/$target")
    echo "== $target: ${seconds}s"
    # shellcheck disable=SC2046
    if ! cargo +nightly fuzz run -O "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        $(flags_for "$target") $(keep_going) >"logs/$target.log" 2>&1; then
        echo "   CRASHED: see fuzz/logs/$target.log and fuzz/artifacts/$target/"
        failed+=("$target")
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$target.log" | grep -o '[0-9]*$' || true)
    if [[ -z $runs ]]; then
        # Fork mode prints its progress lines only: the last one counts.
        runs=$(grep -o '^#[0-9]*' "logs/$target.log" | tail -1 | tr -d '#' || true)
    fi
    echo "   executions: ${runs:-?}, corpus: $(find "corpus/$target" -type f | wc -l) inputs," \
        "crashes saved: $(find "artifacts/$target" -type f 2>/dev/null | wc -l)"
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
