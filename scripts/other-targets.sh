#!/usr/bin/env bash
# Checks what crossproc does on targets without a backend of its own (README, "Platforms"):
# where ipc-channel has a cross-process backend (macOS, FreeBSD, …) a build without
# `force-inprocess` is a compile error that names the feature, and builds with it; where
# ipc-channel itself falls back to one process (Android, …) crossproc builds as is.
#
#   bash scripts/other-targets.sh     # after scripts/windows-lane.sh installed Debian's Rust
#
# std for these targets is built from source (`-Zbuild-std`) with Debian's Rust, which ships the
# std sources, as the Windows lane does; `cargo check` needs no linker or SDK.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$PWD/target/other-targets"
check() {
    local target=$1
    shift
    /usr/bin/cargo check -q -Zbuild-std=std,panic_abort --target "$target" --lib "$@"
}

for target in x86_64-unknown-freebsd x86_64-apple-darwin; do
    if output=$(check "$target" 2>&1); then
        echo "$target: built without force-inprocess, but must be a compile error" >&2
        exit 1
    fi
    if ! grep -q "no cross-process backend for this operating system.*force-inprocess" <<<"$output"; then
        echo "$target: failed for another reason than the expected compile error:" >&2
        echo "$output" >&2
        exit 1
    fi
    echo "$target: compile error naming force-inprocess, as it must be"
    check "$target" --features "force-inprocess async"
    echo "$target: builds with force-inprocess"
done

check aarch64-linux-android --features async
echo "aarch64-linux-android: builds with the in-process fallback, as ipc-channel's does"
