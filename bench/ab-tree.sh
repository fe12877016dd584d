#!/usr/bin/env bash
# CPU of xfer and xferd for `push -r` and `pull -r` of a tree, builds alternating: an A/B
# of two builds (directories holding xferd and xfer) that differ in one change, as
# bench/ab-cpu.sh does for one big file.
#
#   bench/ab-tree.sh N DIR...     N rounds; each round pushes then pulls the tree with each
#                                 build in turn, against a daemon of its own
#   AB_DIR=/var/tmp               where the tree, the data and the pulls live (/dev/shm)
#   AB_FILES=200 AB_KIB=1024      the tree: AB_FILES files of AB_KIB KiB in AB_DIRS folders
#   AB_DIRS=4
#   AB_CHURN=0                    before each pull, that many local copies of the tree
#                                 are made beside it and removed (untimed), as the peers
#                                 of bench/run.sh's small case do before xfer pulls: on
#                                 ext4 without a journal, inodes freed in the last minute
#                                 make new files slow to create (bench/RESULTS.md)
#
# Prints one line per build per round: wall time and CPU seconds (user + system) of xfer
# and of xferd, for the push and the pull. What each run replaces is removed and synced
# first, untimed. Medians are left to the reader.
set -euo pipefail
N=$1; shift
FILES=${AB_FILES:-200}; KIB=${AB_KIB:-1024}; DIRS=${AB_DIRS:-4}; CHURN=${AB_CHURN:-0}
W=$(mktemp -d "${AB_DIR:-/dev/shm}/xfer-abt.XXXXXX")
python3 - "$W/tree" "$FILES" "$KIB" "$DIRS" <<'PY'
import os, sys
d, n, kib, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    sub = os.path.join(d, f"d{i % dirs}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:05}.bin"), "wb") as f:
        f.write(os.urandom(kib * 1024))
PY
declare -A PID
trap 'kill "${PID[@]}" 2>/dev/null; rm -rf "$W"' EXIT
for b in "$@"; do
  d=$W/$(basename "$b"); mkdir -p $d
  echo 'bench-password-1' | $b/xferd --data-dir $d/data user add --create bench --password-stdin >/dev/null
  $b/xferd --data-dir $d/data --listen 127.0.0.1:0 > $d/out 2>$d/log &
  PID[$b]=$!
  for _ in $(seq 100); do grep -q 'listening on' $d/out && break; sleep 0.1; done
  addr=$(sed -n 's/.* listening on //p' $d/out)
  XFER_HOME=$d/home bash -c "echo bench-password-1 | $b/xfer login bench@$addr --password-stdin --accept-new >/dev/null 2>&1"
done
TCK=$(getconf CLK_TCK)
cpu() { awk -v t="$TCK" '{print ($14+$15)/t}' /proc/$1/stat; }
for i in $(seq $N); do
  for b in "$@"; do
    d=$W/$(basename "$b")
    XFER_HOME=$d/home $b/xfer rm -r tree >/dev/null 2>&1 || true
    sync
    s0=$(cpu ${PID[$b]})
    c=$( { XFER_HOME=$d/home /usr/bin/time -f '%U %S %e' $b/xfer push -q -r $W/tree >/dev/null; } 2>&1 | tail -1)
    s1=$(cpu ${PID[$b]})
    rm -rf $W/pull; mkdir $W/pull
    for _ in $(seq $CHURN); do cp -r $W/tree $W/pull/churn; rm -rf $W/pull/churn; done
    sync
    s1b=$(cpu ${PID[$b]})
    p=$( { XFER_HOME=$d/home /usr/bin/time -f '%U %S %e' $b/xfer pull -q -r tree $W/pull/ >/dev/null; } 2>&1 | tail -1)
    s2=$(cpu ${PID[$b]})
    diff -r $W/tree $W/pull/tree >/dev/null || { echo "$b: the pulled tree differs" >&2; exit 1; }
    echo "$b push wall $(awk '{print $3, "client", $1+$2}' <<<"$c") server $(awk -v a="$s0" -v b="$s1" 'BEGIN {print b - a}') | pull wall $(awk '{print $3, "client", $1+$2}' <<<"$p") server $(awk -v a="$s1b" -v b="$s2" 'BEGIN {print b - a}')"
  done
done
