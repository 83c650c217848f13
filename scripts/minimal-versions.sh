#!/usr/bin/env bash
# Proves the declared dependency minimums and `rust-version`: resolves every direct dependency
# at the lowest version Cargo.toml allows (`-Z direct-minimal-versions`, which the stable
# toolchain runs with RUSTC_BOOTSTRAP=1) and builds the library with every feature — with the
# current toolchain and with the toolchain that `rust-version` names.
#
#   bash scripts/minimal-versions.sh
#
# It works on a copy of the tree, so the committed Cargo.lock is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
git ls-files -z | xargs -0 tar cf - | tar xf - -C "$copy"
export CARGO_TARGET_DIR="$PWD/target/minimal-versions"
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)

cd "$copy"
RUSTC_BOOTSTRAP=1 cargo -Z direct-minimal-versions update
echo "resolved at the direct minimums:"
for dependency in serde postcard crossbeam-channel futures-core tempfile tokio castaway rustix; do
    awk -v name="$dependency" '$0 == "name = \"" name "\"" { getline; print "  " name " " $3 }' Cargo.lock
done

check() {
    cargo "$@" check --lib --features "async tokio fuzzing enable-slow-tests win32-trace"
    cargo "$@" check --lib --features "force-inprocess async"
}
check
if rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1; then
    echo "the same with Rust $msrv (rust-version):"
    check "+$msrv"
else
    echo "SKIPPED: Rust $msrv could not be installed here, so rust-version was not checked" >&2
fi
