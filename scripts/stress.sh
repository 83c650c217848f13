#!/usr/bin/env bash
# The suites that move messages, run several times beside busy loops: users' machines are
# busy, and a race that shows only under CPU load (issue 26 lost the last messages of a channel
# that way) must fail here instead of for them.
#
#   bash scripts/stress.sh [rounds] [busy loops]     (defaults: 3 rounds, 3 loops)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
LOOPS=${2:-3}
SUITES=(last_messages conformance conformance_os local channel ring ring_fork ring_fork_review compat cross_process fork select)
FEATURES="async tokio"

args=()
for suite in "${SUITES[@]}"; do args+=(--test "$suite"); done
# Built before the load starts, so that the load falls on the tests alone.
cargo test -q --features "$FEATURES" "${args[@]}" --no-run

busy=()
stop_load() { [ ${#busy[@]} -eq 0 ] || kill "${busy[@]}" 2>/dev/null || true; }
trap stop_load EXIT
for _ in $(seq "$LOOPS"); do
    # A busy loop that uses no memory and ends with this script.
    (while :; do :; done) &
    busy+=($!)
done

for round in $(seq "$ROUNDS"); do
    echo "-- round $round of $ROUNDS beside $LOOPS busy loops"
    timeout --kill-after=10 600 cargo test -q --features "$FEATURES" "${args[@]}"
done
