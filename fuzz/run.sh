#!/usr/bin/env bash
# Fuzzes patgate's parsers and classifiers with cargo-fuzz (libFuzzer).
#
#   fuzz/run.sh [seconds-per-target] [target…]      (default: 60 s, every target)
#   FUZZ_RUNS=10000000 fuzz/run.sh 0 [target…]     (a number of executions per target instead)
#
# Builds every target, runs each for the given time on its committed seed corpus
# (fuzz/corpus/<target>/, read only: new inputs go to a scratch directory so the committed
# seeds stay small), then prints one line per target: executions (libFuzzer's final
# stats), crashes, and where the crashing input was written (fuzz/artifacts/<target>/).
# Exits 1 when any target crashed, leaked, timed out or ran out of memory.
#
# Only the stable toolchain is installed; cargo-fuzz passes nightly `-Z` flags to rustc
# (sanitizer, coverage), which RUSTC_BOOTSTRAP=1 allows on stable.
# Needs: `cargo install cargo-fuzz --locked`, and a C++ compiler (libfuzzer-sys builds
# libFuzzer). Environment: FUZZ_TARGET_DIR (build directory, default fuzz/target),
# FUZZ_SANITIZER (address, the default, or none for about twice the executions),
# FUZZ_RUNS (stop each target after this many executions; the time limit, when not 0, still
# applies), FUZZ_MERGE=1 (afterwards, merge into fuzz/corpus/<target>/ only the new inputs
# that add coverage, with libFuzzer's -merge=1, so the committed seeds grow by what matters).
set -euo pipefail

seconds=${1:-60}
shift || true
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."

export RUSTC_BOOTSTRAP=1
target_dir=${FUZZ_TARGET_DIR:-$here/target}
sanitizer=${FUZZ_SANITIZER:-address}
# cargo-fuzz defaults: release build with debug assertions (overflow checks) on.
flags=(--target-dir "$target_dir" --sanitizer "$sanitizer")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "building ${#targets[@]} targets (sanitizer: $sanitizer)…"
for t in "${targets[@]}"; do
    cargo fuzz build "${flags[@]}" "$t"
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
results=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "$here/artifacts/$t"
    log=$scratch/$t.log
    echo "fuzzing $t for ${seconds}s…"
    status=0
    started=$SECONDS
    limits=(-max_total_time="$seconds")
    if [ -n "${FUZZ_RUNS:-}" ]; then
        limits+=(-runs="$FUZZ_RUNS")
    fi
    cargo fuzz run "${flags[@]}" "$t" "$scratch/$t" "$here/corpus/$t" -- \
        "${limits[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$here/artifacts/$t/" >"$log" 2>&1 || status=$?
    took=$((SECONDS - started))
    execs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log" | tail -n1)
    if [ -z "$execs" ]; then
        # A crash stops libFuzzer before its final stats: take the last progress line.
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -n1 | tr -d '#')
    fi
    artifact=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -n1 | sed 's/Test unit written to //' || true)
    crashes=0
    if [ "$status" -ne 0 ] || [ -n "$artifact" ]; then
        crashes=1
        failed=1
        echo "---- $t failed (exit $status); the end of its log:" >&2
        tail -n 40 "$log" >&2
    fi
    if [ "${FUZZ_MERGE:-0}" = 1 ] && [ "$crashes" = 0 ]; then
        before=$(find "$here/corpus/$t" -type f | wc -l)
        cargo fuzz run "${flags[@]}" "$t" "$here/corpus/$t" "$scratch/$t" -- -merge=1 \
            >"$scratch/$t.merge.log" 2>&1
        after=$(find "$here/corpus/$t" -type f | wc -l)
        echo "$t: corpus $before -> $after files (inputs that add coverage)"
    fi
    results+=("$(printf '%-22s %12s %8s %8s  %s' "$t" "${execs:-?}" "$took" "$crashes" "${artifact:-}")")
    echo "${results[-1]}"
done

echo
printf '%-22s %12s %8s %8s  %s\n' target executions seconds crashes artifact
printf '%s\n' "${results[@]}"
echo "($(date -u +%Y-%m-%d), ${seconds}s per target${FUZZ_RUNS:+, at most $FUZZ_RUNS runs}, sanitizer $sanitizer)"
exit "$failed"
