#!/usr/bin/env bash
# Proves the declared dependency minimums and `rust-version`. The library is built with every
# feature from two resolutions:
#   - every direct dependency at the lowest version Cargo.toml allows
#     (`-Z direct-minimal-versions`, which a stable toolchain runs with RUSTC_BOOTSTRAP=1), with
#     the current toolchain and with the toolchain `rust-version` names;
#   - what a user on that toolchain gets from a fresh MSRV-aware resolution
#     (`resolver.incompatible-rust-versions = "fallback"`), with that toolchain.
#
#   bash scripts/minimal-versions.sh
#
# The `rust-version` toolchain comes from rustup when it has it; otherwise from Debian's
# archive (rustc-web and cargo-web of that version), downloaded with `apt-get download` and
# unpacked under the target directory with `dpkg-deb -x`: nothing is installed, so the system's
# own Rust packages (the Windows lane's) stay as they are; MSRV_TOOLCHAIN=debian skips rustup.
# No toolchain means failure.
# It works on a copy of the tree, so the committed Cargo.lock is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

copy=$(mktemp -d)
minimal_lock=$(mktemp)
trap 'rm -rf "$copy" "$minimal_lock"' EXIT
git ls-files -z | xargs -0 tar cf - | tar xf - -C "$copy"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/minimal-versions"
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
features_all="async tokio fuzzing enable-slow-tests win32-trace"

check() {
    cargo check --lib --features "$features_all"
    cargo check --lib --features "force-inprocess async"
}

print_resolution() {
    for dependency in serde postcard crossbeam-channel futures-core tempfile tokio castaway rustix; do
        awk -v name="$dependency" '$0 == "name = \"" name "\"" { getline; print "  " name " " $3 }' Cargo.lock
    done
}

# Unpacks Debian's Rust $msrv (and the libraries it needs that the system lacks) into $1.
debian_toolchain() {
    local root=$1 debs=$1.debs version
    command -v apt-get >/dev/null || return 1
    if [ ! -x "$root/usr/bin/cargo" ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        version=$(apt-cache madison rustc-web | awk -v want="$msrv" '{ split($3, v, "+"); split(v[1], n, "."); if (n[1] "." n[2] == want || v[1] == want) { print $3; exit } }')
        [ -n "$version" ] || return 1
        rm -rf "$debs" "$root" && mkdir -p "$debs" "$root"
        # The packages of that version, then, breadth first, every dependency not installed here.
        local queue=("rustc-web=$version" "cargo-web=$version") seen=" " item name
        while [ ${#queue[@]} -gt 0 ]; do
            item=${queue[0]} && queue=("${queue[@]:1}")
            name=${item%%=*}
            case "$seen" in *" $name "*) continue ;; esac
            seen="$seen$name "
            # A dependency that cannot be downloaded (a virtual package) is left to the check.
            if ! (cd "$debs" && apt-get download -qq "$item" >/dev/null 2>&1); then
                case "$name" in rustc-web | cargo-web) return 1 ;; *) continue ;; esac
            fi
            local deb
            deb=$(ls "$debs"/"${name}"_*.deb | head -n1)
            dpkg-deb -x "$deb" "$root"
            # "a (>= 1), b (= 2) | c": the first alternative of each, with its version when pinned.
            while read -r dependency; do
                [ -n "$dependency" ] || continue
                local dep_name=${dependency%% *} pin=""
                dep_name=${dep_name%%:*}
                if [[ $dependency =~ \(=\ ([^\)]+)\) ]]; then pin="=${BASH_REMATCH[1]}"; fi
                if ! dpkg-query -W -f '${Status}' "$dep_name" 2>/dev/null | grep -q "ok installed"; then
                    queue+=("$dep_name$pin")
                fi
            done < <(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/^ *//; s/ *$//')
        done
    fi
    export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu:$root/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PATH="$root/usr/bin:$PATH" RUSTC="$root/usr/bin/rustc" RUSTDOC="$root/usr/bin/rustdoc"
}

cd "$copy"
RUSTC_BOOTSTRAP=1 cargo -Z direct-minimal-versions update
cp Cargo.lock "$minimal_lock"
echo "resolved at the direct minimums:"
print_resolution
check

# The toolchain `rust-version` names, on PATH from here on.
if [ "${MSRV_TOOLCHAIN:-}" != debian ] && command -v rustup >/dev/null \
    && { rustup run "$msrv" rustc --version >/dev/null 2>&1 \
        || rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1; }; then
    export RUSTUP_TOOLCHAIN="$msrv"
elif ! debian_toolchain "$CARGO_TARGET_DIR/rust-$msrv"; then
    echo "FAILED: Rust $msrv (rust-version) is neither in rustup nor in Debian's archive here" >&2
    exit 1
fi
found=$(rustc --version)
case "$found" in
    "rustc $msrv"*) ;;
    *) echo "FAILED: asked for Rust $msrv (rust-version), got $found" >&2 && exit 1 ;;
esac
echo "the same with $found, $(cargo --version) (rust-version):"
cp "$minimal_lock" Cargo.lock
check

echo "a fresh MSRV-aware resolution (incompatible-rust-versions = fallback) with $found:"
rm Cargo.lock
CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo generate-lockfile
print_resolution
check
