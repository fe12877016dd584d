#!/usr/bin/env bash
# Crash loop, long (docs/TESTING.md "Crash loop"): the standing suite's crash:: tests
# with 500 kill -9 cycles and 200 syscall faults at random syscalls, paths, occurrences
# and errors on top of the fixed ones. XFER_SEED=N replays a run (each test prints its
# seed); XFER_CRASH_CYCLES and XFER_FAULTS_RANDOM override the counts.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
export CARGO_INCREMENTAL=0
command -v strace >/dev/null || { apt-get update -qq && apt-get install -y -qq strace; }
export XFER_CRASH_CYCLES=${XFER_CRASH_CYCLES:-500}
export XFER_FAULTS_RANDOM=${XFER_FAULTS_RANDOM:-200}
export XFER_REQUIRE_INTEROP=1
start=$(date +%s)
cargo test --quiet --locked -p xfer-e2e --test standing -- crash:: --nocapture 2>&1 |
    grep -E '^(crash loop|syscall faults):|panicked|^test result|FAILED|^fault|^cycle' 
status=${PIPESTATUS[0]}
echo "crash loop: $(( $(date +%s) - start )) s"
exit "$status"
