#!/usr/bin/env bash
# A browser upload over loopback: headless chromium (Debian's chromium + chromium-driver)
# signs in to xferd's web page and uploads one file of random data with the page's picker
# (BLAKE3 in Web Workers, verified resumable chunks, whole-file digest at commit). Prints
# MB/s (10^6 bytes/s, from the page's own start-to-commit time), the CPU seconds chromium
# (every process of the page) and xferd spent, and the same per GiB.
#
#   bench/web.sh [SIZE_MIB] [RUNS]      defaults: 1024 MiB, 3 runs
#   XFER_BIN_DIR=DIR bench/web.sh …     the binaries in DIR instead of a fresh release build
#   BLAKE3=js bench/web.sh …            the page hashes in JavaScript (`?blake3=js`), not wasm
#   RUN=N bench/web.sh …                N chunks per request (`?run=N`; 1: one request per chunk)
#   HTTP1=1 bench/web.sh …              chromium --disable-http2: HTTP/1.1 against an older xferd
#                                       that preferred h2 (xferd now prefers HTTP/1.1 itself)
#
# Each run also prints the engine the page's workers hashed with and chromium's busiest
# threads (CPU s/GiB by process type/thread name).
#
# Files live under BENCH_DIR (default /dev/shm, as bench/run.sh: the disk is not measured).
# Installs chromium and chromium-driver from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-3}

if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if [ -n "${XFER_BIN_DIR:-}" ]; then
  BIN=$(cd "$XFER_BIN_DIR" && pwd)
else
  cargo build --release --quiet -p xferd -p xfer
  BIN=$PWD/target/release
fi
XFERD=$BIN/xferd

W=$(mktemp -d "${BENCH_DIR:-/dev/shm}/xfer-web-bench.XXXXXX")
cleanup() {
  [ -n "${XFERD_PID:-}" ] && kill "$XFERD_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

echo "generating ${SIZE_MIB} MiB of random data…" >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$W/src.bin"

echo 'bench-password-1' | "$XFERD" --data-dir "$W/data" user add --create bench --password-stdin >/dev/null
"$XFERD" --data-dir "$W/data" --listen 127.0.0.1:0 >"$W/xferd.out" 2>"$W/xferd.log" &
XFERD_PID=$!
for _ in $(seq 100); do grep -q 'listening on' "$W/xferd.out" 2>/dev/null && break; sleep 0.05; done
XADDR=$(sed -n 's/.* listening on //p' "$W/xferd.out")
TCK=$(getconf CLK_TCK)
xferd_cpu() { awk -v t="$TCK" '{print ($14 + $15) / t}' "/proc/$XFERD_PID/stat"; }

QUERY=""
[ -n "${BLAKE3:-}" ] && QUERY="blake3=$BLAKE3"
[ -n "${RUN:-}" ] && QUERY="${QUERY:+$QUERY&}run=$RUN"
QUERY=${QUERY:+?$QUERY}
if [ -n "${HTTP1:-}" ]; then export CHROMIUM_ARGS="${CHROMIUM_ARGS:-} --disable-http2"; fi

for run in $(seq "$RUNS"); do
  # Each run uploads to a fresh name: nothing to resume, every chunk is sent.
  cp --reflink=auto "$W/src.bin" "$W/run$run.bin" 2>/dev/null || ln "$W/src.bin" "$W/run$run.bin"
  s0=$(xferd_cpu)
  out=$(python3 bench/web_driver.py "https://$XADDR" bench bench-password-1 "$W/run$run.bin" \
    "$QUERY")
  s1=$(xferd_cpu)
  python3 - "$out" "$s0" "$s1" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
xferd = float(sys.argv[3]) - float(sys.argv[2])
gib = r['bytes'] / 2**30
print(f"run: {r['mb_s']} MB/s ({r['bytes']} bytes in {r['page_ms']} ms), "
      f"CPU s: chromium {r['chromium_cpu_s']} ({r['chromium_cpu_s'] / gib:.2f}/GiB), "
      f"xferd {xferd:.2f} ({xferd / gib:.2f}/GiB), {r['hardware_concurrency']} cores, "
      f"BLAKE3 {r['engine']}, {r.get('protocol') or '?'}")
print("  chromium s/GiB by thread: "
      + ", ".join(f"{name} {s / gib:.2f}" for name, s in r['threads']))
PY
  rm -f "$W/run$run.bin" "$W/data/users/bench/files/run$run.bin"
done
