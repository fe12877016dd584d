#!/usr/bin/env bash
# Scale, long (docs/TESTING.md, "Scale"): 10,000 idle authenticated connections (ignored in the fast suite).
# Prints the "figure" line recorded in docs/TESTING.md. Run by tests/long/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../../.."
# Thousands of sockets in the test process; the daemon it starts inherits the limit.
ulimit -n "$(ulimit -Hn)"
env XFER_SCALE_CONNS=10000 \
    cargo test --release --locked --workspace --test standing -- measure::idle_authenticated --ignored \
    --nocapture --test-threads=1
