#!/usr/bin/env bash
# CPU of xfer and xferd for 1 GiB pushes and pulls, builds alternating: an A/B of two
# builds (directories holding xferd and xfer) that differ in one change.
#
#   bench/ab-cpu.sh N DIR...    N rounds; each round pushes then pulls 1 GiB on tmpfs
#                               (AB_DIR=/var/tmp: on the disk)
#                               with each build in turn, against a daemon of its own
#
# Prints one line per build per round: CPU seconds (user + system) of xfer and of xferd,
# the wall time, and the whole machine's CPU seconds over the command (every process and
# kernel thread: the page cache's writeback runs in kernel threads, not in xferd; on a
# quiet machine this is the honest total), for the push and the pull. Medians are left
# to the reader.
set -euo pipefail
N=$1; shift
W=$(mktemp -d "${AB_DIR:-/dev/shm}/xfer-ab.XXXXXX")
head -c 1G /dev/urandom > $W/src.bin
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
# user + nice + system + irq + softirq of all CPUs.
mcpu() { awk -v t="$TCK" '/^cpu /{print ($2+$3+$4+$7+$8)/t}' /proc/stat; }
for i in $(seq $N); do
  for b in "$@"; do
    d=$W/$(basename "$b")
    s0=$(cpu ${PID[$b]}); m0=$(mcpu)
    c=$( { XFER_HOME=$d/home /usr/bin/time -f '%U %S %e' $b/xfer push -q --force $W/src.bin big.bin >/dev/null; } 2>&1 | tail -1)
    # The file the push replaced is freed by xferd after the answer: count it here.
    for _ in $(seq 200); do
      find /proc/${PID[$b]}/fd -lname '* (deleted)' 2>/dev/null | grep -q . || break; sleep 0.05
    done
    s1=$(cpu ${PID[$b]}); m1=$(mcpu)
    rm -f $W/dst.bin
    m1b=$(mcpu)
    p=$( { XFER_HOME=$d/home /usr/bin/time -f '%U %S %e' $b/xfer pull -q big.bin $W/dst.bin >/dev/null; } 2>&1 | tail -1)
    s2=$(cpu ${PID[$b]}); m2=$(mcpu)
    rm -f $W/dst.bin
    echo "$b push client $(awk '{print $1+$2, "wall", $3}' <<<"$c") server $(awk -v a="$s0" -v b="$s1" 'BEGIN {print b - a}') machine $(awk -v a="$m0" -v b="$m1" 'BEGIN {print b - a}') | pull client $(awk '{print $1+$2, "wall", $3}' <<<"$p") server $(awk -v a="$s1" -v b="$s2" 'BEGIN {print b - a}') machine $(awk -v a="$m1b" -v b="$m2" 'BEGIN {print b - a}')"
  done
done
