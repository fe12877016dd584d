#!/usr/bin/env bash
# Hostile peers, long (docs/TESTING.md, "Hostile peers"): 1,000 hostile peers instead of 300.
# Prints the "figure" line recorded in docs/TESTING.md. Run by tests/long/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../../.."
# Thousands of sockets in the test process; the daemon it starts inherits the limit.
ulimit -n "$(ulimit -Hn)"
env XFER_HOSTILE_PEERS=1000 \
    cargo test --release --locked --workspace --test standing -- hostile::  \
    --nocapture --test-threads=1
