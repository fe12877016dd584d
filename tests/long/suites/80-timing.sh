#!/usr/bin/env bash
# Timing, long (docs/TESTING.md, "Timing"): wrong password vs unknown user, 200 each, interleaved (ignored in the fast suite).
# Prints the "figure" line recorded in docs/TESTING.md. Run by tests/long/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../../.."
# Thousands of sockets in the test process; the daemon it starts inherits the limit.
ulimit -n "$(ulimit -Hn)"
env XFER_TIMING_ROUNDS=200 \
    cargo test --release --locked --workspace --test standing -- measure::wrong_password --ignored \
    --nocapture --test-threads=1
