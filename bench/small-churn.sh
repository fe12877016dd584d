#!/usr/bin/env bash
# Pushes and pulls of 2,000 files of 2 KiB, each into a tree removed just before, on one
# filesystem: wall time and the CPU of xferd and xfer per run. Files freshly removed make
# ext4 without a journal slow to create new ones (bench/RESULTS.md, "one inode per file"),
# so later runs show what churn costs. For an A/B on a fresh filesystem each time:
#
#   truncate -s 2G /var/tmp/fs.img && mkdir -p /mnt/nj
#   mkfs.ext4 -q -F -O ^has_journal /var/tmp/fs.img && mount -o loop,discard /var/tmp/fs.img /mnt/nj
#   bench/small-churn.sh target/release /mnt/nj 3; umount /mnt/nj
#
#   bench/small-churn.sh BIN_DIR DIR [RUNS]     BIN_DIR holds xfer and xferd; default 3 runs
set -euo pipefail
BIN=$1; DIR=${2:-/dev/shm}; RUNS=${3:-3}
W=$(mktemp -d $DIR/xp.XXXXXX)
trap 'kill $XP 2>/dev/null; rm -rf $W' EXIT
python3 - $W/src <<'PY'
import os, sys
d=sys.argv[1]
for i in range(2000):
    sub=os.path.join(d, f"d{i%20:02}"); os.makedirs(sub, exist_ok=True)
    open(os.path.join(sub, f"f{i:05}.bin"),"wb").write(os.urandom(2048))
PY
echo pw-pw-pw-pw1 | $BIN/xferd --data-dir $W/data user add --create bench --password-stdin >/dev/null
$BIN/xferd --data-dir $W/data --listen 127.0.0.1:0 >$W/out 2>$W/log &
XP=$!
for _ in $(seq 200); do grep -q 'listening on' $W/out 2>/dev/null && break; sleep 0.05; done
A=$(sed -n 's/.* listening on //p' $W/out)
export XFER_HOME=$W/home
echo pw-pw-pw-pw1 | $BIN/xfer login bench@$A --password-stdin --accept-new >/dev/null 2>&1
cpu() { awk '{print $14+$15}' /proc/$XP/stat; }
for r in $(seq $RUNS); do
  $BIN/xfer rm -r src >/dev/null 2>&1 || true; sync
  c0=$(cpu); s=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o $W/t $BIN/xfer push -r -q $W/src
  e=$(date +%s.%N); c1=$(cpu)
  echo "push $r: wall $(echo "$e - $s" | bc | cut -c1-5) s, xferd cpu $(echo "($c1 - $c0)/100" | bc -l | cut -c1-5) s, xfer cpu $(awk '{print $1+$2}' $W/t) s"
done
for r in $(seq $RUNS); do
  rm -rf $W/pull; sync
  s=$(date +%s.%N); c0=$(cpu)
  /usr/bin/time -f "%U %S" -o $W/t $BIN/xfer pull -r -q src $W/pull/
  e=$(date +%s.%N); c1=$(cpu)
  echo "pull $r: wall $(echo "$e - $s" | bc | cut -c1-5) s, xferd cpu $(echo "($c1 - $c0)/100" | bc -l | cut -c1-5) s, xfer cpu $(awk '{print $1+$2}' $W/t) s"
done
