#!/usr/bin/env bash
# The standing suite's long part (docs/TESTING.md): runs every tests/long/suites/*.sh in
# name order, each with the release binaries, and appends what each prints to
# tests/long/results/<UTC date>.txt. Usage: tests/long/run.sh [SUITE-NAME...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
cargo build --release --locked --bins -p xferd -p xfer
export XFER_BIN_DIR="$root/target/release"
mkdir -p "$here/results"
out="$here/results/$(date -u +%Y-%m-%d).txt"
suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
    for s in "$here"/suites/*.sh; do [ -e "$s" ] && suites+=("$(basename "$s" .sh)"); done
fi
status=0
for name in "${suites[@]}"; do
    script="$here/suites/$name.sh"
    [ -x "$script" ] || { echo "no suite $script" >&2; exit 2; }
    echo "== $name ($(date -u +%H:%M:%SZ), $(git rev-parse --short HEAD))" | tee -a "$out"
    if ! "$script" 2>&1 | tee -a "$out"; then
        echo "!! $name FAILED" | tee -a "$out"
        status=1
    fi
done
exit $status
