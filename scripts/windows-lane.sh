#!/usr/bin/env bash
# The Windows test lane: builds the crate and its tests for x86_64-pc-windows-gnu with Debian's
# Rust (which ships std sources, so std is built for the target) and runs them under Wine.
#
#   bash scripts/windows-lane.sh            # installs what it needs (Debian), then runs the tests
#
# Every integration test file runs here against the Windows backend (named pipes), the
# cross-process ones included; README's platform table lists the tests that stay Linux-only.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v x86_64-w64-mingw32-gcc >/dev/null || [ ! -x /usr/lib/wine/wine64 ] || [ ! -d /usr/lib/rustlib/src/rust ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64 wine64 >/dev/null
fi

shim_dir="$PWD/target/windows-shim"
mkdir -p "$shim_dir"
x86_64-w64-mingw32-gcc -shared -O2 -o "$shim_dir/bcryptprimitives.dll" scripts/windows/bcryptprimitives.c -ladvapi32

export WINEDEBUG=-all
export WINEPREFIX="$PWD/target/wine-prefix"
export WINEPATH="Z:${shim_dir//\//\\}"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=/usr/lib/wine/wine64
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_DIR="$PWD/target/windows"
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
target=(-Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu --features async)
# No clippy ships with Debian's Rust, so at least the compiler's warnings fail the lane.
warnings=$(/usr/bin/cargo check "${target[@]}" --tests --message-format short 2>&1 | grep -E '^(src|tests)/.*: warning' || true)
if [ -n "$warnings" ]; then
    echo "$warnings"
    exit 1
fi
# One wineserver for the whole lane (-p: persistent). Without it, each test process's exit can end
# the server while the next one starts, and a client then loses its connection to it ("wine client
# error:0: recvmsg: Connection reset by peer", seen once in two fresh runs).
mkdir -p "$WINEPREFIX"
/usr/lib/wine/wineserver -k 2>/dev/null || true
/usr/lib/wine/wineserver -p
trap '/usr/lib/wine/wineserver -k 2>/dev/null || true' EXIT
# One test at a time: Wine's process creation fails now and then (ERROR_INTERNAL_ERROR) when
# several tests spawn child processes at once (seen in CI while the 64-client test ran).
/usr/bin/cargo test "${target[@]}" --tests "$@" -- --test-threads=1
