#!/usr/bin/env bash
# The benchmark: xfer against what a user would otherwise run, side by side in one run.
# Installs its peers itself (OpenSSH server and client, rsync from Debian; dufs from
# crates.io), starts each on a private 127.0.0.1 port, alternates the contenders, and
# prints medians as Markdown: MB/s, ratios, and CPU seconds per GiB for each side.
#
#   bench/run.sh [options] [SIZE_MIB] [RUNS]
#     --size MIB        the big file (1024)
#     --runs N          runs per contender, median reported (5; medians of 3 swing ±30 %
#                       on a shared 2-core VM)
#     --where W         tmpfs, disk or both (both): where the files and the data live;
#                       tmpfs is /dev/shm, disk is $BENCH_DISK_DIR (/var/tmp)
#     --cases LIST      comma-separated: big, resume, small, lan, s3, load, scale
#                       (big,resume,small; lan: a 256 MiB file and both trees again, every
#                       contender reaching its server through an emulated LAN link of
#                       1 Gbit/s and 0.5 ms round trip, bench/link, set with
#                       BENCH_LAN_MBIT, BENCH_LAN_RTT_MS and BENCH_LAN_MIB;
#                       s3: the big file through xferd on a Garage bucket vs on local files,
#                       which installs Garage if it is missing;
#                       load: chat fan-out to 1,000 members, 10,000 idle connections and
#                       token re-logins from bench/load; scale: the long suite's version
#                       of the last two, which builds the release test binary)
#     --peers LIST      comma-separated: scp, rsync, dufs (all; sftp always runs)
#     --smoke           64 MiB, 1 run, tmpfs, cases big,resume,small,lan (16 MiB over the
#                       link) on small trees, peers
#                       that install fast (no dufs): what CI runs so this never rots
#     --bin DIR         xfer and xferd from DIR (e.g. an older build) instead of a
#                       release build of this tree (also XFER_BIN_DIR=DIR)
#     --record          also append the report to bench/RESULTS.md
#
# Every timed operation deletes its destination first, inside the timed region (sftp put
# truncates when it opens): on this VM freed memory goes back to the host after ~2 s and
# the first write into it costs up to ~2.5 s more per GiB (see RESULTS.md), so each
# writer must write into the memory it just freed. Before each timed operation, `sync`
# writes out what the one before left dirty (untimed), so no contender pays for another's
# writeback; what a contender leaves dirty itself is not waited for (xfer syncs what it
# receives before it reports it; sftp, scp, rsync and curl do not). Every sample's time
# goes to the log. Client CPU comes from `times` (the
# client and its children: ssh under sftp, scp and rsync), server CPU from
# /proc/PID/stat with reaped children (sshd's sessions).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=1024 RUNS=5 WHERE=both CASES=big,resume,small PEERS=scp,rsync,dufs RECORD=0
SMALL_FILES=2000 MEDIUM_FILES=200
BIN_DIR=${XFER_BIN_DIR:-}
ARGS="$*"
positional=()
while [ $# -gt 0 ]; do
  case $1 in
    --size) SIZE_MIB=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --where) WHERE=$2; shift ;;
    --cases) CASES=$2; shift ;;
    --peers) PEERS=$2; shift ;;
    --bin) BIN_DIR=$2; shift ;;
    --record) RECORD=1 ;;
    --smoke) SIZE_MIB=64 RUNS=1 WHERE=tmpfs CASES=big,resume,small,lan PEERS=scp,rsync
             : "${BENCH_LAN_MIB:=16}"
             command -v garage >/dev/null && CASES=$CASES,s3
             SMALL_FILES=200 MEDIUM_FILES=20 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) positional+=("$1") ;;
  esac
  shift
done
[ ${#positional[@]} -ge 1 ] && SIZE_MIB=${positional[0]}
[ ${#positional[@]} -ge 2 ] && RUNS=${positional[1]}
case $WHERE in tmpfs|disk|both) ;; *) echo "bench/run.sh: --where takes tmpfs, disk or both" >&2; exit 2 ;; esac

source bench/lib.sh
for c in bench/cases/*.sh; do source "$c"; done
has_peer() { [[ ",$PEERS," == *",$1,"* ]]; }
has_case() { [[ ",$CASES," == *",$1,"* ]]; }

apt_install openssh-server openssh-client openssl curl
has_peer rsync && apt_install rsync
has_peer dufs && install_dufs

if [ -n "$BIN_DIR" ]; then
  BIN=$(cd "$BIN_DIR" && pwd)
  cargo build --release --quiet -p xfer-ceiling -p xfer-load -p xfer-link
else
  cargo build --release --quiet -p xferd -p xfer -p xfer-ceiling -p xfer-load -p xfer-link
  BIN=$PWD/target/release
fi
XFERD=$BIN/xferd XFER=$BIN/xfer CEILING=$PWD/target/release/xfer-ceiling
LOAD=$PWD/target/release/xfer-load LINK=$PWD/target/release/xfer-link
LINK_PIDS=()

BENCH_TMP=$(mktemp -d /dev/shm/xfer-bench-tmp.XXXXXX)
REPORT=$BENCH_TMP/report.md
report() { echo "$*" | tee -a "$REPORT"; }
cleanup() {
  set +e
  stop_place_servers
  [ ${#LINK_PIDS[@]} -gt 0 ] && kill "${LINK_PIDS[@]}" 2>/dev/null
  [ -n "${SSHD_PID:-}" ] && kill "$SSHD_PID" 2>/dev/null
  [ -n "${W:-}" ] && rm -rf "$W"
  rm -rf "$BENCH_TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_sshd "$BENCH_TMP/sshd"

report "## $(date -u '+%Y-%m-%d %H:%M UTC'): \`bench/run.sh $ARGS\`"
report ""
report "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), load average at start $(cut -d' ' -f1-3 /proc/loadavg); binaries: $BIN ($(git rev-parse --short HEAD)$(git diff --quiet || echo ', uncommitted changes')). MB/s are 10^6 bytes/s; contenders alternate within each run; other work on the machine makes figures swing, so compare within one run."
report ""

places=()
[ "$WHERE" != disk ] && places+=(tmpfs)
[ "$WHERE" != tmpfs ] && places+=(disk)
for place in "${places[@]}"; do
  case $place in
    tmpfs) base=/dev/shm ;;
    disk) base=${BENCH_DISK_DIR:-/var/tmp} ;;
  esac
  W=$(mktemp -d "$base/xfer-bench.XXXXXX")
  PLACE_LABEL="$place ($(df --output=fstype "$W" | tail -1) at $base)"
  say "== $PLACE_LABEL"
  start_xferd
  has_peer dufs && start_dufs
  SRC=$W/src.bin
  if has_case big || has_case resume || has_case s3; then
    say "  generating ${SIZE_MIB} MiB of random data…"
    head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$SRC"
    BYTES=$(stat -c %s "$SRC")
  fi
  has_case big && case_big
  has_case resume && case_resume
  has_case small && case_small
  has_case s3 && case_s3
  has_case lan && case_lan
  stop_place_servers
  rm -rf "$W"
  W=''
  unset T C S; declare -A T C S
done
has_case load && case_load
has_case scale && case_scale

if [ "$RECORD" = 1 ]; then
  { echo; cat "$REPORT"; } >>bench/RESULTS.md
  say "appended to bench/RESULTS.md"
fi
