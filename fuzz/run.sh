#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) with cargo-fuzz on the nightly
# toolchain, installing cargo-fuzz if it is missing. A crash stops the run with the
# target's name and leaves the input under fuzz/artifacts/<target>/; turn it into a unit
# test next to the code it broke. Corpora grow in fuzz/corpus/ (not committed), starting
# from the committed examples in fuzz/seeds/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-30}
shift || true
if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || {
    echo "fuzz: no nightly toolchain and none could be installed; fuzzing skipped" >&2
    exit 0
  }
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
targets=("$@")
[ ${#targets[@]} -eq 0 ] && mapfile -t targets < <(cargo +nightly fuzz list)
if ! build=$(cargo +nightly fuzz build -O 2>&1); then
  echo "$build" | grep -Ev "^ *(Compiling|Downloaded|Downloading|Updating|Locking|Adding) " | tail -40
  echo "fuzz: building the targets failed" >&2
  exit 1
fi
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  out=$(cargo +nightly fuzz run -O "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$SECONDS_EACH" 2>&1) || {
    echo "$out" | tail -40
    echo "fuzz target $t failed: see fuzz/artifacts/$t/" >&2
    exit 1
  }
  echo "$t: $(echo "$out" | grep -E '^Done [0-9]+ runs' | tail -1)"
done
