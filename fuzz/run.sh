#!/usr/bin/env bash
# Runs every cargo-fuzz target of loop-orchestrator for a while and reports what it found.
#
#   fuzz/run.sh [seconds-per-target]      (default 10; CI calls `fuzz/run.sh 5`)
#
# - Installs cargo-fuzz if it is missing.
# - Works on stable Rust: RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z flags that
#   cargo-fuzz passes (-Zsanitizer=address); the ASan runtime ships with stable rust-std.
# - Each target starts from a copy of its committed seed corpus (fuzz/corpus/<target>/) in
#   a temp directory, so a run never grows the repository. Crash inputs are kept in
#   fuzz/artifacts/<target>/ (git-ignored).
# - First replays every input under fuzz/regressions/<target>/ (crashes found earlier);
#   FUZZ_SKIP_REGRESSIONS=1 skips that while a known crash is not fixed yet.
# - Exits non-zero when any target crashed (panic, sanitizer error, timeout, OOM).
#
# Environment: CARGO_TARGET_DIR is honoured (default fuzz/target); FUZZ_TARGETS="a b"
# limits the run to some targets; FUZZ_ARGS adds libFuzzer flags.
set -euo pipefail

seconds="${1:-10}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [seconds-per-target]" >&2
    exit 2
fi

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"

echo "== building fuzz targets"
cargo fuzz build
# Run the built binaries directly (not `cargo fuzz run`, which rebuilds before each target):
# one build, and a library edited during the run cannot change what is being fuzzed.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$host/release"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"

# tmpfs when available: the memory and timing targets write (and fsync) files per input.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    work="$(mktemp -d -p /dev/shm loop-orchestrator-fuzz.XXXXXX)"
else
    work="$(mktemp -d -t loop-orchestrator-fuzz.XXXXXX)"
fi
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp"

failed=()
summary=()
for target in $targets; do
    artifacts="$fuzz_dir/artifacts/$target"
    mkdir -p "$artifacts"

    regressions="$fuzz_dir/regressions/$target"
    if [ -z "${FUZZ_SKIP_REGRESSIONS:-}" ] && [ -d "$regressions" ] &&
        [ -n "$(ls -A "$regressions")" ]; then
        echo "== $target: replaying $(ls -A "$regressions" | wc -l) regression input(s)"
        if ! TMPDIR="$work/tmp" "$bin_dir/$target" "$regressions"/* \
            >"$work/$target.regressions.log" 2>&1; then
            echo "-- $target: a regression input still crashes:"
            grep -a -E "^Running: |panicked at|ERROR: " "$work/$target.regressions.log" |
                grep -a -B1 -E "panicked at|ERROR: " | head -n 6 || true
            grep -a -A2 "panicked at" "$work/$target.regressions.log" | sed -n '2,3p' || true
            failed+=("$target (regression input still crashes)")
            summary+=("$target: REGRESSION still crashes (inputs in fuzz/regressions/$target/)")
        fi
    fi

    corpus="$work/corpus/$target"
    mkdir -p "$corpus"
    if [ -d "$fuzz_dir/corpus/$target" ]; then
        cp "$fuzz_dir/corpus/$target"/* "$corpus"/ 2>/dev/null || true
    fi
    before="$(ls -A "$artifacts" | wc -l)"
    echo "== $target: fuzzing for ${seconds}s"
    log="$work/$target.log"
    status=0
    # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
    TMPDIR="$work/tmp" "$bin_dir/$target" "$corpus" -artifact_prefix="$artifacts/" \
        -max_total_time="$seconds" -timeout=25 -max_len=8192 -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    corpus_size="$(ls -A "$corpus" | wc -l)"
    after="$(ls -A "$artifacts" | wc -l)"
    if [ "$status" -ne 0 ]; then
        echo "-- $target FOUND A CRASH (exit $status); last lines of the log:"
        grep -E "panicked at|ERROR: |SUMMARY|Test unit written" "$log" | head -n 20 || true
        tail -n 15 "$log"
        failed+=("$target")
        found="CRASH (new artifacts: $((after - before)), in fuzz/artifacts/$target/)"
    else
        found="nothing"
    fi
    line="$target: ${execs:-?} executions, ${rate:-?} exec/s, corpus ${corpus_size} inputs, found: $found"
    echo "-- $line"
    summary+=("$line")
done

echo "== summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all fuzz targets ran clean"
