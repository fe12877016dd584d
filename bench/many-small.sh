#!/usr/bin/env bash
# Many files over loopback: `xfer push -r` / `pull -r` against `sftp put -r` / `get -r` and
# `rsync -a -e ssh`, in the same run, alternating, median of N runs, for two trees:
# 2,000 files of 2 KiB in 20 folders, and 200 files of 1 MiB in 10 folders.
#
#   bench/many-small.sh [RUNS]            default 5
#   BENCH_DIR=/var/tmp bench/many-small.sh   trees, xferd's data and the ssh side on the
#                                         disk (default /dev/shm, a tmpfs)
#   XFER_BIN_DIR=DIR bench/many-small.sh  the xfer and xferd in DIR (e.g. an older build)
#   TREES=small bench/many-small.sh       only one of the trees (small, big)
#
# Every destination is removed before each timed run and `sync` is run, both outside the
# timed region, so no run pays for an earlier one's writeback. xfer makes each file
# durable before it reports it (the server fsyncs; sftp and rsync do not); pulls by xfer
# flush the local disk too. A private sshd runs on a 127.0.0.1 port with its own host key.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}

for tool in sshd rsync; do
  if ! command -v $tool >/dev/null && [ ! -x /usr/sbin/$tool ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client rsync >/dev/null
  fi
done
if [ -n "${XFER_BIN_DIR:-}" ]; then
  BIN=$(cd "$XFER_BIN_DIR" && pwd)
else
  cargo build --release --quiet -p xferd -p xfer
  BIN=$PWD/target/release
fi
XFERD=$BIN/xferd
XFER=$BIN/xfer

W=$(mktemp -d "${BENCH_DIR:-/dev/shm}/xfer-many.XXXXXX")
cleanup() {
  [ -n "${XFERD_PID:-}" ] && kill "$XFERD_PID" 2>/dev/null || true
  [ -n "${SSHD_PID:-}" ] && kill "$SSHD_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

# --- trees ---
make_tree() { # dir folders files_per_folder bytes
  for f in $(seq "$2"); do
    mkdir -p "$1/dir$f"
    for i in $(seq "$3"); do head -c "$4" /dev/urandom >"$1/dir$f/file$i"; done
  done
}
make_tree "$W/src/small" 20 100 2048
make_tree "$W/src/big" 10 20 1048576

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
cat >"$W/sshd_config" <<CFG
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
SSHOPT="-i $W/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes"
ME="$(id -un)@127.0.0.1"
SFTP=(sftp -q -P "$SSH_PORT" $SSHOPT "$ME")
RSYNC=(rsync -a -e "ssh -p $SSH_PORT $SSHOPT")
for _ in $(seq 100); do "${SFTP[@]}" <<<"pwd" >/dev/null 2>&1 && break; sleep 0.1; done
mkdir -p "$W/ssh" "$W/back"

# One operation on tree $T. Preparation (removing its destination) is `prep_*`.
prep_xpush() { "$XFER" rm -r "$T" >/dev/null 2>&1 || true; }
xpush() { "$XFER" push -q -r "$W/src/$T" ""; }
prep_spush() { rm -rf "$W/ssh/$T"; mkdir -p "$W/ssh/$T"; }
spush() { "${SFTP[@]}" <<<"put -r $W/src/$T $W/ssh/$T"; }
prep_rpush() { rm -rf "$W/ssh/$T"; }
rpush() { "${RSYNC[@]}" "$W/src/$T/" "$ME:$W/ssh/$T/"; }
prep_xpull() { rm -rf "$W/back/x-$T"; mkdir -p "$W/back/x-$T"; }
xpull() { "$XFER" pull -q -r "$T" "$W/back/x-$T/"; }
prep_spull() { rm -rf "$W/back/s-$T"; mkdir -p "$W/back/s-$T"; }
spull() { "${SFTP[@]}" <<<"get -r $W/ssh/$T $W/back/s-$T"; }
prep_rpull() { rm -rf "$W/back/r-$T"; }
rpull() { "${RSYNC[@]}" "$ME:$W/ssh/$T/" "$W/back/r-$T/"; }

now() { date +%s.%N; }
timed() { # op: prints the wall seconds
  "prep_$1"; sync
  local t0 t1
  t0=$(now)
  "$1" >/dev/null 2>&1 || { echo "$1 on $T failed" >&2; exit 1; }
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

OPS="xpush spush rpush xpull spull rpull"
echo
echo "loopback, trees under $(df --output=fstype "$W" | tail -1) ($W), median of $RUNS (alternating), $(nproc) cores, $(date -u +%F)"
for T in ${TREES:-small big}; do
  # The pulls need the ssh side's copy: one untimed push each first.
  T=$T xpush >/dev/null 2>&1 || true
  prep_rpush; rpush >/dev/null 2>&1
  declare -A R=()
  for _ in $(seq "$RUNS"); do
    for op in $OPS; do R[$op]+="$(timed "$op") "; done
  done
  diff -r "$W/src/$T" "$W/back/x-$T/$T" >/dev/null || { echo "xfer pull -r of $T differs!" >&2; exit 1; }
  diff -r "$W/src/$T" "$W/data/users/bench/files/$T" >/dev/null || { echo "xfer push -r of $T differs!" >&2; exit 1; }
  files=$(find "$W/src/$T" -type f | wc -l)
  declare -A M=()
  for op in $OPS; do M[$op]=$(echo "${R[$op]}" | median); done
  echo "tree $T: $files files, $(du -sh --apparent-size "$W/src/$T" | cut -f1)"
  for op in $OPS; do
    printf '  %-6s %7.2f s  %6.0f files/s   runs: %s\n' "$op" "${M[$op]}" "$(echo "$files / ${M[$op]}" | bc -l)" "${R[$op]}"
  done
  printf '  push: xfer/sftp %.2fx  xfer/rsync %.2fx   pull: xfer/sftp %.2fx  xfer/rsync %.2fx\n' \
    "$(echo "${M[spush]} / ${M[xpush]}" | bc -l)" "$(echo "${M[rpush]} / ${M[xpush]}" | bc -l)" \
    "$(echo "${M[spull]} / ${M[xpull]}" | bc -l)" "$(echo "${M[rpull]} / ${M[xpull]}" | bc -l)"
done
