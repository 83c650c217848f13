#!/usr/bin/env bash
# Runs every example (each a short program in real processes) and fails if one does: the
# feature examples in debug, the demo as the README runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
for example in spawn server shared_memory select; do
    echo "-- example $example"
    cargo run -q --example "$example"
done
echo "-- example tokio"
cargo run -q --features tokio --example tokio
echo "-- the demo"
cargo run -q --release --example demo
