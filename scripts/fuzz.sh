#!/usr/bin/env bash
# Runs every fuzz target for a fixed time: bash scripts/fuzz.sh [seconds per target, default 60]
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
# libFuzzer is C++: make sure a C++ compiler is there (Debian).
command -v g++ >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; }
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "corpus/$target"
    cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 \
        | grep -E "^(#[0-9]+ +DONE|INFO: Running|==[0-9]+==|SUMMARY|Done [0-9]+ runs)" || true
    # A crash leaves an artifact and a non-zero exit; pipefail would hide it behind grep, so check.
    if ls "artifacts/$target"/crash-* "artifacts/$target"/oom-* "artifacts/$target"/timeout-* >/dev/null 2>&1; then
        echo "fuzz target $target found a failure: see fuzz/artifacts/$target" >&2
        exit 1
    fi
done
