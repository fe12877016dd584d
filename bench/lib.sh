# Shared pieces of bench/run.sh (sourced, not run): installing and starting the peers,
# timing one operation with the CPU of both sides, medians and the report's rows.
#
# Conventions: every case runs in a "place" (a directory on tmpfs or on the disk, $W),
# with its own xferd and dufs serving that place; the private sshd is shared (it serves
# any path). A contender is a shell function that performs one operation and deletes its
# own destination first, inside the timed region (see run.sh: memory on this VM).

TCK=$(getconf CLK_TCK)
now() { date +%s.%N; }
say() { echo "$*" >&2; }

# --- installing the peers -------------------------------------------------------------

apt_install() { # PACKAGE… (only the missing ones are asked for)
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} from Debian…"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# dufs from crates.io, built once (cargo's bin directory caches it).
install_dufs() {
  command -v dufs >/dev/null && return 0
  [ -x "$HOME/.cargo/bin/dufs" ] && { PATH=$HOME/.cargo/bin:$PATH; return 0; }
  say "installing dufs from crates.io (cargo install dufs --locked; a few minutes once)…"
  cargo install dufs --locked --quiet
  PATH=$HOME/.cargo/bin:$PATH
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- servers --------------------------------------------------------------------------

# A private sshd on a free 127.0.0.1 port with its own host key and config under $1;
# nothing system-wide is touched. Sets SSH_PORT, SSHD_PID and the client commands
# SSH_OPTS, SFTP, SSH_USER.
start_sshd() {
  local d=$1
  mkdir -p "$d" /run/sshd
  SSH_PORT=$(free_port)
  ssh-keygen -q -t ed25519 -N '' -f "$d/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$d/client_key"
  cp "$d/client_key.pub" "$d/authorized_keys"
  cat > "$d/sshd_config" <<CFG
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
CFG
  /usr/sbin/sshd -f "$d/sshd_config" -D -e 2>"$d/sshd.log" &
  SSHD_PID=$!
  SSH_USER="$(id -un)@127.0.0.1"
  SSH_OPTS=(-i "$d/client_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR)
  SFTP=(sftp -q -P "$SSH_PORT" "${SSH_OPTS[@]}" "$SSH_USER")
  SCP=(scp -q -P "$SSH_PORT" "${SSH_OPTS[@]}")
  RSYNC_SSH="ssh -p $SSH_PORT ${SSH_OPTS[*]}"
  for _ in $(seq 100); do "${SFTP[@]}" <<<"pwd" >/dev/null 2>&1 && return 0; sleep 0.1; done
  say "sshd did not come up: $(cat "$d/sshd.log")"; return 1
}

# xferd with its data directory in $W/data, user `bench`, and xfer logged in (XFER_HOME
# in $W). Sets XFERD_PID.
start_xferd() {
  echo 'bench-password-1' | "$XFERD" --data-dir "$W/data" user add --create bench --password-stdin >/dev/null
  "$XFERD" --data-dir "$W/data" --listen 127.0.0.1:0 >"$W/xferd.out" 2>"$W/xferd.log" &
  XFERD_PID=$!
  for _ in $(seq 200); do grep -q 'listening on' "$W/xferd.out" 2>/dev/null && break; sleep 0.05; done
  local addr
  addr=$(sed -n 's/.* listening on //p' "$W/xferd.out")
  [ -n "$addr" ] || { say "xferd did not start: $(cat "$W/xferd.log")"; return 1; }
  export XFER_HOME=$W/xfer-home
  echo 'bench-password-1' | "$XFER" login "bench@$addr" --password-stdin --accept-new >/dev/null 2>&1
}

# dufs serving $W/dufs over HTTPS (a self-signed certificate made with openssl) with a
# user and password; curl trusts that certificate. Sets DUFS_PID and CURL, DUFS_URL.
start_dufs() {
  mkdir -p "$W/dufs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$W/dufs-key.pem" -out "$W/dufs-cert.pem" 2>/dev/null
  local port
  port=$(free_port)
  dufs "$W/dufs" --bind 127.0.0.1 --port "$port" --tls-cert "$W/dufs-cert.pem" --tls-key "$W/dufs-key.pem" \
    --auth 'bench:bench-password-1@/:rw' --allow-upload --allow-delete >"$W/dufs.log" 2>&1 &
  DUFS_PID=$!
  DUFS_URL=https://127.0.0.1:$port
  CURL=(curl -sSf --cacert "$W/dufs-cert.pem" -u bench:bench-password-1)
  for _ in $(seq 100); do "${CURL[@]}" -o /dev/null "$DUFS_URL/" 2>/dev/null && return 0; sleep 0.1; done
  say "dufs did not start: $(cat "$W/dufs.log")"; return 1
}

stop_place_servers() {
  local pid
  for pid in ${XFERD_PID:-} ${DUFS_PID:-}; do
    # `wait` returns the signal's status (143): not a failure of the benchmark.
    kill "$pid" 2>/dev/null && { wait "$pid" 2>/dev/null || true; }
  done
  XFERD_PID='' DUFS_PID=''
  return 0
}

# --- timing ---------------------------------------------------------------------------

# CPU seconds a process and its reaped children have used (sshd reaps its sessions).
proc_cpu() { awk -v t="$TCK" '{print ($14 + $15 + $16 + $17) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU seconds this shell's children have used so far (`times`, second line). `times` must
# run in this shell, not in a pipeline or a command substitution (a forked subshell).
child_cpu() {
  times >"$BENCH_TMP/times"
  tail -1 "$BENCH_TMP/times" | sed 's/m/ /g; s/s//g' | awk '{print $1 * 60 + $2 + $3 * 60 + $4}'
}
# sshd accounts a session's CPU when it reaps it, just after the client exits.
settle_sshd() {
  for _ in $(seq 100); do pgrep -P "$SSHD_PID" >/dev/null || return 0; sleep 0.02; done
}

# xferd closes a big file that lost its last name (a push --force over it, an rm) on a
# thread of its own after answering: wait for that, so it neither runs inside the next
# contender's clock nor escapes xferd's CPU for the command that caused it.
settle_xferd() {
  for _ in $(seq 250); do
    find "/proc/$XFERD_PID/fd" -lname "$W/*(deleted)" 2>/dev/null | grep -q . || return 0
    sleep 0.02
  done
  echo "warning: xferd still holds a removed file after 5 s; timing goes on" >&2
}

# Runs contender function $2 whose server is process $1 (0: none); appends
# "wall client_cpu server_cpu" to the samples of key $3. A function ${2}_prep, where
# there is one, runs first, untimed (e.g. removing what the last run left). What earlier
# contenders left dirty in the page cache is written out first, untimed: sftp, scp,
# rsync and curl leave their files to the kernel's writeback, which could otherwise run
# (30 s later, or once enough is dirty) inside whichever contender comes next, and
# xfer's own syncs would wait for it.
declare -A T C S
sample() {
  local spid=$1 f=$2 key=$3 t0 t1 c0 c1 s0=0 s1=0
  if declare -F "${f}_prep" >/dev/null; then
    "${f}_prep" >/dev/null 2>&1 || true
    [ "$spid" = "${SSHD_PID:-x}" ] && settle_sshd
    [ "$spid" = "${XFERD_PID:-x}" ] && settle_xferd
  fi
  sync
  [ "$spid" != 0 ] && s0=$(proc_cpu "$spid")
  child_cpu >"$BENCH_TMP/c0"; t0=$(now)
  if ! "$f" >"$BENCH_TMP/out" 2>&1; then
    say "$f failed:"; cat "$BENCH_TMP/out" >&2; return 1
  fi
  t1=$(now)
  [ "$spid" = "${SSHD_PID:-x}" ] && settle_sshd
  [ "$spid" = "${XFERD_PID:-x}" ] && settle_xferd
  child_cpu >"$BENCH_TMP/c1"
  [ "$spid" != 0 ] && s1=$(proc_cpu "$spid")
  c0=$(cat "$BENCH_TMP/c0"); c1=$(cat "$BENCH_TMP/c1")
  local wall; wall=$(echo "$t1 - $t0" | bc -l)
  T[$key]+="$wall "
  # Every sample goes to the log, so a median can be read against its spread.
  say "    $key $(awk -v w="$wall" 'BEGIN {printf "%.2f", w}') s"
  C[$key]+="$(echo "$c1 - $c0" | bc -l) "
  S[$key]+="$(echo "$s1 - $s0" | bc -l) "
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print 0}'; }
med() { echo "${T[$1]}" | median; }
# MB/s (10^6 bytes per second) of key $1 moving $2 bytes.
mbps() { echo "${T[$1]}" | median | awk -v b="$2" '{printf "%.0f", b / $1 / 1e6}'; }
# Median CPU seconds per GiB of the client ($1=C) or server ($1=S) of key $2, $3 bytes.
cpu_gib() {
  local -n arr=$1
  echo "${arr[$2]}" | median | awk -v b="$3" '{printf "%.2f", $1 * 1073741824 / b}'
}
# How many times faster key $1 is than key $2 (ratio of median wall times).
ratio() { awk -v a="$(med "$1")" -v b="$(med "$2")" 'BEGIN {if (a > 0) printf "%.2f×", b / a; else print "-"}'; }
