#!/usr/bin/env bash
# The test command the README gives: the whole suite (unit, integration with real child
# processes, doc tests) with every feature that applies on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --features "async tokio" "$@"
