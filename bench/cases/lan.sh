# The big file and the two trees again, every contender reaching its server through an
# emulated LAN link (bench/link: a relay that adds a round trip and caps the rate, each
# way) instead of loopback, where a round trip costs microseconds. The link: round trip
# $BENCH_LAN_RTT_MS ms (0.5), rate $BENCH_LAN_MBIT Mbit/s (1000); the big file is
# $BENCH_LAN_MIB MiB (256). The ceilings are not run over it: at 1 Gbit/s the link is
# the ceiling. Sourced by run.sh inside a place ($W), after the other cases.

LAN_RTT_MS=${BENCH_LAN_RTT_MS:-0.5}
LAN_MBIT=${BENCH_LAN_MBIT:-1000}
LAN_MIB=${BENCH_LAN_MIB:-256}

# A link in front of ADDR (NAME names its files); sets LINK_ADDR, adds to LINK_PIDS.
start_link() {
  local to=$1 name=$2
  "$LINK" --to "$to" --rtt-ms "$LAN_RTT_MS" --mbit "$LAN_MBIT" >"$W/link-$name.out" 2>>"$W/link.log" &
  LINK_PIDS+=($!)
  for _ in $(seq 200); do grep -q '^listening on' "$W/link-$name.out" 2>/dev/null && break; sleep 0.05; done
  LINK_ADDR=$(sed -n 's/^listening on //p' "$W/link-$name.out")
  [ -n "$LINK_ADDR" ] || { say "xfer-link did not start: $(cat "$W/link.log")"; return 1; }
}

case_lan() {
  local sftp=("${SFTP[@]}") scp=("${SCP[@]}") rsync_ssh=$RSYNC_SSH home=$XFER_HOME
  local url=${DUFS_URL:-} src=${SRC:-} bytes=${BYTES:-} label=$PLACE_LABEL size=$SIZE_MIB
  LINK_PIDS=()
  start_link "$(sed -n 's/.* listening on //p' "$W/xferd.out")" xferd
  local xferd_addr=$LINK_ADDR
  start_link "127.0.0.1:$SSH_PORT" sshd
  local ssh_port=${LINK_ADDR##*:}
  SFTP=(sftp -q -P "$ssh_port" "${SSH_OPTS[@]}" "$SSH_USER")
  SCP=(scp -q -P "$ssh_port" "${SSH_OPTS[@]}")
  RSYNC_SSH="ssh -p $ssh_port ${SSH_OPTS[*]}"
  if has_peer dufs; then
    start_link "${DUFS_URL#https://}" dufs
    DUFS_URL=https://$LINK_ADDR
  fi
  # xfer pins the server by the address it logged in to: a login of its own.
  export XFER_HOME=$W/xfer-home-lan
  echo 'bench-password-1' | "$XFER" login "bench@$xferd_addr" --password-stdin --accept-new >/dev/null 2>&1
  PLACE_LABEL="$label, over a link of $LAN_MBIT Mbit/s with a round trip of $LAN_RTT_MS ms"
  # What the cases before left in the samples is reported: start afresh.
  unset T C S; declare -gA T C S

  say "  generating ${LAN_MIB} MiB of random data for the link…"
  SRC=$W/lan.bin SIZE_MIB=$LAN_MIB
  head -c "$((LAN_MIB * 1024 * 1024))" /dev/urandom >"$SRC"
  BYTES=$(stat -c %s "$SRC")
  BIG_CEILING=0 case_big
  rm -f "$SRC"

  mkdir -p "$W/trees" "$W/pull" "$W/ssh"
  [ -d "$W/trees/small" ] || make_tree "$W/trees/small" "$SMALL_FILES" 2048 20
  [ -d "$W/trees/medium" ] || make_tree "$W/trees/medium" "$MEDIUM_FILES" 1048576 4
  TREE=small tree_round "$SMALL_FILES" "$SMALL_FILES files of 2 KiB in 20 folders"
  TREE=medium tree_round "$MEDIUM_FILES" "$MEDIUM_FILES files of 1 MiB in 4 folders"

  kill "${LINK_PIDS[@]}" 2>/dev/null || true
  wait "${LINK_PIDS[@]}" 2>/dev/null || true
  LINK_PIDS=()
  SFTP=("${sftp[@]}") SCP=("${scp[@]}") RSYNC_SSH=$rsync_ssh DUFS_URL=$url
  export XFER_HOME=$home
  SRC=$src BYTES=$bytes PLACE_LABEL=$label SIZE_MIB=$size
}
