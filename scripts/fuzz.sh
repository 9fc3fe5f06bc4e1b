#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders (cargo-fuzz / libFuzzer) on the
# stable toolchain:
#
#   ./scripts/fuzz.sh [TARGET|all] [SECONDS]     (default: all, 60 s each)
#
# Targets: wal_frame log_record json_scan route config (fuzz/fuzz_targets/).
# Each run starts from the committed corpus fuzz/corpus/TARGET (read, never
# written) and keeps what it discovers in fuzz/target/corpus/TARGET, so the
# committed corpus only changes when you copy an input there yourself. A
# crash stops the run with exit status 1 and leaves the input in
# fuzz/artifacts/TARGET/; fix the decoder, then copy the input into
# fuzz/corpus/TARGET/ and add a regression test (see docs/ARCHITECTURE.md,
# "Fuzzing").
#
# cargo-fuzz is installed (cargo install cargo-fuzz --locked) if missing.
# libFuzzer's instrumentation needs unstable rustc flags: the script sets
# RUSTC_BOOTSTRAP=1 so the stable compiler accepts them, and builds without
# a sanitizer (--sanitizer none; AddressSanitizer needs nightly's std).
# Environment: FUZZ_JOBS (parallel libFuzzer jobs; their output goes to
# fuzz/fuzz-N.log), FUZZ_ARGS (more libFuzzer flags, e.g. -max_len=65536).
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGETS=(wal_frame log_record json_scan route config)
WHICH="${1:-all}"
SECONDS_EACH="${2:-60}"

if [[ "$WHICH" == "all" ]]; then
    selected=("${TARGETS[@]}")
else
    found=0
    for t in "${TARGETS[@]}"; do
        [[ "$t" == "$WHICH" ]] && found=1
    done
    if [[ $found -eq 0 ]]; then
        echo "fuzz.sh: unknown target '$WHICH' (one of: ${TARGETS[*]}, all)" >&2
        exit 2
    fi
    selected=("$WHICH")
fi
if ! [[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || [[ "$SECONDS_EACH" -lt 1 ]]; then
    echo "fuzz.sh: SECONDS must be a whole number >= 1, not '$SECONDS_EACH'" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
cd "$ROOT/fuzz"
if [[ ${#selected[@]} -eq 1 ]]; then
    cargo fuzz build --sanitizer none "${selected[0]}"
else
    cargo fuzz build --sanitizer none
fi
jobs=()
if [[ -n "${FUZZ_JOBS:-}" ]]; then
    jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
fi
for t in "${selected[@]}"; do
    scratch="$ROOT/fuzz/target/corpus/$t"
    mkdir -p "$scratch"
    echo "===== fuzz $t for ${SECONDS_EACH}s"
    # shellcheck disable=SC2086
    cargo fuzz run --sanitizer none "$t" "$scratch" "$ROOT/fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 "${jobs[@]}" ${FUZZ_ARGS:-}
done
