#!/usr/bin/env bash
# Push and pull a file over loopback with xfer and with OpenSSH sftp, in the same run,
# alternating, median of N runs; prints MB/s and the ratios xfer/sftp.
#
#   bench/run.sh [SIZE_MIB] [RUNS]      defaults: 1024 MiB, 3 runs
#
# Both tools read and write under BENCH_DIR (default /dev/shm, a tmpfs): on this VM, disk
# writeback throttling caps any writer at ~400 MB/s once a GiB is dirty, which measures the
# disk, not the protocols. Set BENCH_DIR=/var/tmp to include the disk.
#
# Installs openssh-server/-client from Debian if missing and runs a private sshd on a
# 127.0.0.1 port with its own config and host key (nothing system-wide is touched).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-3}

if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null
fi
cargo build --release --quiet -p xferd -p xfer
XFERD=$PWD/target/release/xferd
XFER=$PWD/target/release/xfer

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
echo 'bench-password-1' | "$XFERD" --data-dir "$W/data" user add bench --password-stdin >/dev/null
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
timed() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); echo "$t1 - $t0" | bc -l; }
xfer_push() { "$XFER" push -q --force "$W/src.bin" bench.bin; }
xfer_pull() { rm -f "$W/pull/bench.bin"; "$XFER" pull -q --force bench.bin "$W/pull/"; }
sftp_put() { "${SFTP[@]}" <<<"put $W/src.bin $W/sftp-dst/put.bin"; }
sftp_get() { rm -f "$W/pull/get.bin"; "${SFTP[@]}" <<<"get $W/sftp-dst/put.bin $W/pull/get.bin"; }

declare -A T
for i in $(seq "$RUNS"); do
  T[xpush]+="$(timed xfer_push) "
  T[sput]+="$(timed sftp_put) "
  T[xpull]+="$(timed xfer_pull) "
  T[sget]+="$(timed sftp_get) "
done
cmp "$W/src.bin" "$W/pull/bench.bin" || { echo "xfer pull result differs!" >&2; exit 1; }
cmp "$W/src.bin" "$W/pull/get.bin" || { echo "sftp get result differs!" >&2; exit 1; }

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbps() { echo "scale=0; $BYTES / $1 / 1000000" | bc -l; }
declare -A M
for k in xpush sput xpull sget; do M[$k]=$(echo "${T[$k]}" | median); done

echo
echo "file: ${SIZE_MIB} MiB, loopback, files under $(df --output=fstype "$W" | tail -1) ($W), median of $RUNS (alternating), $(nproc) cores"
printf '%-22s %8s MB/s   (%s s)\n' "xfer push" "$(mbps "${M[xpush]}")" "${M[xpush]}"
printf '%-22s %8s MB/s   (%s s)\n' "sftp put" "$(mbps "${M[sput]}")" "${M[sput]}"
printf '%-22s %8s MB/s   (%s s)\n' "xfer pull" "$(mbps "${M[xpull]}")" "${M[xpull]}"
printf '%-22s %8s MB/s   (%s s)\n' "sftp get" "$(mbps "${M[sget]}")" "${M[sget]}"
printf 'push ratio xfer/sftp: %.2fx   pull ratio xfer/sftp: %.2fx\n' \
  "$(echo "${M[sput]} / ${M[xpush]}" | bc -l)" "$(echo "${M[sget]} / ${M[xpull]}" | bc -l)"
