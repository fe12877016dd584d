#!/usr/bin/env bash
# Connection abuse, long (docs/TESTING.md, "Connection abuse"): 4,096 TLS and 8,000 idle TCP connections, the default handshake deadline and a 30 s login deadline.
# Prints the "figure" line recorded in docs/TESTING.md. Run by tests/long/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../../.."
# Thousands of sockets in the test process; the daemon it starts inherits the limit.
ulimit -n "$(ulimit -Hn)"
env XFER_ABUSE_TLS=4096 XFER_ABUSE_TCP=8000 XFER_ABUSE_HANDSHAKE_SECS=10 XFER_ABUSE_LOGIN_SECS=30 \
    cargo test --release --locked --workspace --test standing -- abuse::  \
    --nocapture --test-threads=1
