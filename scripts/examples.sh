#!/usr/bin/env bash
# Runs every example (each a short program in real processes) and fails if one does: the
# feature examples in debug, the demo as the README runs it. Each is built first and then given
# a bound, so that a hang fails here, naming the example, instead of stalling CI.
set -euo pipefail
cd "$(dirname "$0")/.."
BOUND=180
bounded() {
    local status=0
    timeout --kill-after=10 "$BOUND" "$@" || status=$?
    if [ "$status" -ne 0 ]; then
        [ "$status" -eq 124 ] && echo "HUNG: '$*' did not finish within $BOUND s" >&2
        exit "$status"
    fi
}
cargo build -q --examples
cargo build -q --features tokio --example tokio
cargo build -q --release --example demo
for example in spawn server shared_memory select; do
    echo "-- example $example"
    bounded cargo run -q --example "$example"
done
echo "-- example tokio"
bounded cargo run -q --features tokio --example tokio
echo "-- the demo"
bounded cargo run -q --release --example demo
