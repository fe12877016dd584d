#!/usr/bin/env bash
# The copies alignment decides, on this machine (see bench/copies.c): the kernel's copy
# of file data into buffers at several offsets from a page, and glibc's memcpy of 16 KiB
# records at several source/destination offsets, with glibc's defaults and with the
# tunable xfer and xferd start with on AMD CPUs (glibc/src/lib.rs).
#
#   bench/copies.sh [DIR]    DIR holds the 1 GiB test file (/dev/shm)
set -euo pipefail
DIR=${1:-/dev/shm}
W=$(mktemp -d)
F=$DIR/copies-$$.bin
trap 'rm -rf "$W" "$F"' EXIT
cc -O2 -o "$W/copies" "$(dirname "$0")/copies.c"
head -c 1G /dev/urandom > "$F"
grep -m1 'model name' /proc/cpuinfo
for off in 0 16 32 64 0 16 32 64; do "$W/copies" pread "$F" $off; done
TUNED=glibc.cpu.x86_rep_movsb_threshold=1073741824
for pair in "0 0" "0 16" "5 16" "5 32" "5 48" "21 16"; do
  "$W/copies" memcpy $pair
  GLIBC_TUNABLES=$TUNED "$W/copies" memcpy $pair | sed 's/$/   (tuned)/'
done
