#!/usr/bin/env bash
# The unprivileged lane: the kernel exempts root from the descriptor limits crossproc must stay
# inside (RLIMIT_NOFILE, the per-user count of descriptors in flight in Unix sockets), so a CI
# that runs as root never sees them. This builds the test binaries as root (rustup's cargo under
# /root is not readable by others), copies them where others can run them, and runs them
# directly, without cargo:
#   - every integration test binary and the library's unit tests as `nobody`;
#   - tests/in_flight.rs alone as `crossproc-inflight`, a system user made for it (the in-flight
#     count is per user: other tests as nobody beside it would disturb it).
# Idempotent: the user is made only if missing, the binaries go to a fresh directory, removed at
# the end. Respects CARGO_TARGET_DIR. Must run as root (it switches users with setpriv).
set -euo pipefail
cd "$(dirname "$0")/.."

FEATURES="async tokio"
INFLIGHT_USER=crossproc-inflight
# Binaries that cannot run as an unprivileged user, and why (none so far).
LEFT_OUT=()

if [ "$(id -u)" -ne 0 ]; then
    echo "unprivileged.sh: run as root (it builds as root and switches users)" >&2
    exit 1
fi
if ! id "$INFLIGHT_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$INFLIGHT_USER"
fi
nobody_group=$(id -gn nobody)

start=$(date +%s)
echo "-- building the test binaries (features: $FEATURES)"
cargo test --no-run --features "$FEATURES" >&2
# Their paths: the test artifacts of this package, the library's unit tests and each file in tests/.
binaries=$(cargo test --no-run --features "$FEATURES" --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    # Only this package builds test artifacts (profile.test); dependencies never do.
    if not message["profile"]["test"]:
        continue
    kinds = message["target"]["kind"]
    if "test" in kinds or "lib" in kinds:
        name = "lib" if "lib" in kinds else message["target"]["name"]
        print(name, message["executable"])
')

stage=$(mktemp -d /tmp/crossproc-unprivileged.XXXXXX)
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"
while read -r name path; do
    install -m 755 "$path" "$stage/$name"
done <<<"$binaries"

# A writable temporary directory and a home of their own for each user (servers make their
# sockets under TMPDIR).
run_as() {
    local user=$1 group=$2 name=$3
    shift 3
    local tmp="$stage/tmp-$user"
    mkdir -p "$tmp"
    chown "$user:$group" "$tmp"
    chmod 700 "$tmp"
    (cd "$stage" && setpriv --reuid="$user" --regid="$group" --clear-groups \
        env -i PATH=/usr/bin:/bin HOME="$tmp" TMPDIR="$tmp" RUST_BACKTRACE=1 "./$name" -q "$@")
}

failed=()
for name in $(cut -d' ' -f1 <<<"$binaries" | sort -u); do
    case " ${LEFT_OUT[*]-} " in *" $name "*) continue ;; esac
    [ "$name" = in_flight ] && continue
    echo "-- $name, as nobody"
    run_as nobody "$nobody_group" "$name" || failed+=("$name")
done
# Descriptor tests that other branches add: run above with the rest when they exist.
for name in fd_leaks same_end_received; do
    [ -x "$stage/$name" ] || echo "-- $name: no such test binary in this tree, skipped"
done
if [ -x "$stage/in_flight" ]; then
    echo "-- in_flight, as $INFLIGHT_USER (alone)"
    output=$(run_as "$INFLIGHT_USER" "$INFLIGHT_USER" in_flight --test-threads=1 --nocapture 2>&1) || failed+=(in_flight)
    echo "$output" | tail -n 20
    # Unprivileged, it must really run: a skip here would prove nothing.
    if grep -q SKIPPED <<<"$output"; then
        echo "in_flight was skipped as $INFLIGHT_USER" >&2
        failed+=(in_flight-skipped)
    fi
else
    echo "no in_flight test binary" >&2
    failed+=(in_flight-missing)
fi

echo "-- unprivileged lane: $(($(date +%s) - start)) s"
if [ ${#failed[@]} -ne 0 ]; then
    echo "failed as an unprivileged user: ${failed[*]}" >&2
    exit 1
fi
