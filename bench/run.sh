#!/usr/bin/env bash
# Push and pull a file over loopback with xfer and with OpenSSH sftp, in the same run,
# alternating, median of N runs; prints MB/s, the ratios xfer/sftp, and the CPU seconds
# xfer and xferd spent per operation.
#
#   bench/run.sh [SIZE_MIB] [RUNS]      defaults: 1024 MiB, 5 runs (medians of 3 swing
#                                       by ±30 % on the shared 2-core VM)
#   XFER_BIN_DIR=DIR bench/run.sh …     the binaries in DIR instead of a fresh release build
#
# Both tools read and write under BENCH_DIR (default /dev/shm, a tmpfs): on this VM, disk
# writeback throttling caps any writer at ~400 MB/s once a GiB is dirty, which measures the
# disk, not the protocols. Set BENCH_DIR=/var/tmp to include the disk.
#
# Memory: this VM returns freed memory to the host after ~2 s (virtio-balloon free page
# reporting), and the first write into such memory costs up to ~2.5 s more per GiB than a
# write into memory freed just before (see RESULTS.md). So every timed operation deletes
# its destination first, inside the timed region, and writes into the memory that frees:
# `sftp put` truncates the existing file when it opens it, `xfer push` is preceded by
# `xfer rm`, both pulls `rm -f` the local file. `xfer push --force` over the existing
# file is an atomic replace (the old file stays until the new one is complete, so the new
# one lands in memory freed long ago); it is timed as its own row.
#
# Installs openssh-server/-client from Debian if missing and runs a private sshd on a
# 127.0.0.1 port with its own config and host key (nothing system-wide is touched).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-5}

if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null
fi
# XFER_BIN_DIR=dir: benchmark the xfer and xferd found there (e.g. an older build, to
# compare before and after a change) instead of building this tree's release binaries.
if [ -n "${XFER_BIN_DIR:-}" ]; then
  BIN=$(cd "$XFER_BIN_DIR" && pwd)
else
  cargo build --release --quiet -p xferd -p xfer
  BIN=$PWD/target/release
fi
XFERD=$BIN/xferd
XFER=$BIN/xfer

W=$(mktemp -d "${BENCH_DIR:-/dev/shm}/xfer-bench.XXXXXX")
cleanup() {
  [ -n "${XFERD_PID:-}" ] && kill "$XFERD_PID" 2>/dev/null || true
  [ -n "${SSHD_PID:-}" ] && kill "$SSHD_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

echo "generating ${SIZE_MIB} MiB of random data…" >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$W/src.bin"
BYTES=$(stat -c %s "$W/src.bin")

# --- xferd ---
echo 'bench-password-1' | "$XFERD" --data-dir "$W/data" user add --create bench --password-stdin >/dev/null
"$XFERD" --data-dir "$W/data" --listen 127.0.0.1:0 >"$W/xferd.out" 2>"$W/xferd.log" &
XFERD_PID=$!
for _ in $(seq 100); do grep -q 'listening on' "$W/xferd.out" 2>/dev/null && break; sleep 0.05; done
XADDR=$(sed -n 's/.* listening on //p' "$W/xferd.out")
export XFER_HOME=$W/xfer-home
echo 'bench-password-1' | "$XFER" login "bench@$XADDR" --password-stdin --accept-new >/dev/null 2>&1

# --- private sshd ---
SSH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ssh-keygen -q -t ed25519 -N '' -f "$W/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$W/client_key"
cp "$W/client_key.pub" "$W/authorized_keys"
mkdir -p /run/sshd
cat > "$W/sshd_config" <<CFG
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $W/host_key
PidFile $W/sshd.pid
AuthorizedKeysFile $W/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
CFG
/usr/sbin/sshd -f "$W/sshd_config" -D -e 2>"$W/sshd.log" &
SSHD_PID=$!
SFTP=(sftp -q -P "$SSH_PORT" -i "$W/client_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes "$(id -un)@127.0.0.1")
for _ in $(seq 100); do "${SFTP[@]}" <<<"pwd" >/dev/null 2>&1 && break; sleep 0.1; done
mkdir -p "$W/sftp-dst" "$W/pull"

now() { date +%s.%N; }
TCK=$(getconf CLK_TCK)
# CPU seconds xferd has used so far.
xferd_cpu() { awk -v t="$TCK" '{print ($14 + $15) / t}' "/proc/$XFERD_PID/stat"; }
# CPU seconds this shell's children have used so far (`times`, second line). `times` must
# run in this shell, not in a pipeline or a command substitution (a forked subshell).
child_cpu() {
  times >"$W/times"
  tail -1 "$W/times" | sed 's/m/ /g; s/s//g' | awk '{print $1 * 60 + $2 + $3 * 60 + $4}'
}
# Prints "wall client_cpu server_cpu" for one run of "$@".
timed() {
  local t0 t1 c0 c1 s0 s1
  s0=$(xferd_cpu); child_cpu >"$W/c0"; t0=$(now)
  "$@" >/dev/null 2>&1
  t1=$(now); child_cpu >"$W/c1"; s1=$(xferd_cpu)
  c0=$(cat "$W/c0"); c1=$(cat "$W/c1")
  echo "$(echo "$t1 - $t0" | bc -l) $(echo "$c1 - $c0" | bc -l) $(echo "$s1 - $s0" | bc -l)"
}
xfer_push() { "$XFER" rm bench.bin; "$XFER" push -q "$W/src.bin" bench.bin; }
xfer_push_force() { "$XFER" push -q --force "$W/src.bin" bench.bin; }
xfer_pull() { rm -f "$W/pull/bench.bin"; "$XFER" pull -q --force bench.bin "$W/pull/"; }
sftp_put() { "${SFTP[@]}" <<<"put $W/src.bin $W/sftp-dst/put.bin"; }
sftp_get() { rm -f "$W/pull/get.bin"; "${SFTP[@]}" <<<"get $W/sftp-dst/put.bin $W/pull/get.bin"; }

# One untimed round first, so every destination exists (and is deleted) in the first timed one.
for f in xfer_push_force sftp_put xfer_pull sftp_get; do $f >/dev/null 2>&1; done
declare -A T C S
for i in $(seq "$RUNS"); do
  for k in xpush sput xpull sget xforce; do
    case $k in
      xpush) f=xfer_push ;; sput) f=sftp_put ;; xpull) f=xfer_pull ;; sget) f=sftp_get ;;
      xforce) f=xfer_push_force ;;
    esac
    read -r wall cpu srv <<<"$(timed $f)"
    T[$k]+="$wall "; C[$k]+="$cpu "; S[$k]+="$srv "
  done
done
cmp "$W/src.bin" "$W/pull/bench.bin" || { echo "xfer pull result differs!" >&2; exit 1; }
cmp "$W/src.bin" "$W/pull/get.bin" || { echo "sftp get result differs!" >&2; exit 1; }

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbps() { echo "scale=0; $BYTES / $1 / 1000000" | bc -l; }
declare -A M
for k in xpush sput xpull sget xforce; do M[$k]=$(echo "${T[$k]}" | median); done
# CPU seconds per GiB, median.
per_gib() { echo "$1" | median | awk -v b="$BYTES" '{printf "%.2f", $1 * 1073741824 / b}'; }

echo
echo "file: ${SIZE_MIB} MiB, loopback, files under $(df --output=fstype "$W" | tail -1) ($W), median of $RUNS (alternating), $(nproc) cores"
row() { # label key [cpu]
  printf '%-30s %6s MB/s  (%6.2f s)' "$1" "$(mbps "${M[$2]}")" "${M[$2]}"
  [ -n "${3:-}" ] && printf '   cpu s/GiB: xfer %s, xferd %s' "$(per_gib "${C[$2]}")" "$(per_gib "${S[$2]}")"
  echo
}
row "xfer push" xpush cpu
row "sftp put" sput
row "xfer pull" xpull cpu
row "sftp get" sget
row "xfer push --force (replace)" xforce cpu
printf 'push ratio xfer/sftp: %.2fx   pull ratio xfer/sftp: %.2fx   push --force/sftp put: %.2fx\n' \
  "$(echo "${M[sput]} / ${M[xpush]}" | bc -l)" "$(echo "${M[sget]} / ${M[xpull]}" | bc -l)" \
  "$(echo "${M[sput]} / ${M[xforce]}" | bc -l)"
