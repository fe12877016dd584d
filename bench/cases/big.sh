# One big file, push and pull: xfer against sftp, scp, rsync over ssh and dufs + curl,
# and the ceiling (bench/ceiling: the same bytes over bare rustls, hashed and written,
# no protocol; two designs, tokio with file threads as xfer and plain blocking threads,
# the faster of the two is the ceiling of a push; the ceiling of a pull sends the file
# xferd stored, read as a download reads it: on the disk, from the disk). Sourced by
# run.sh inside a place ($W); needs $SRC and $BYTES.

xfer_push() { "$XFER" rm big.bin 2>/dev/null || true; "$XFER" push -q "$SRC" big.bin; }
xfer_pull() { rm -f "$W/pull/big.bin"; "$XFER" pull -q --force big.bin "$W/pull/"; }
sftp_put() { "${SFTP[@]}" <<<"put $SRC $W/ssh/sftp.bin"; }
sftp_get() { rm -f "$W/pull/sftp.bin"; "${SFTP[@]}" <<<"get $W/ssh/sftp.bin $W/pull/sftp.bin"; }
scp_put() { rm -f "$W/ssh/scp.bin"; "${SCP[@]}" "$SRC" "$SSH_USER:$W/ssh/scp.bin"; }
scp_get() { rm -f "$W/pull/scp.bin"; "${SCP[@]}" "$SSH_USER:$W/ssh/scp.bin" "$W/pull/scp.bin"; }
# rsync would send a delta against an existing destination: delete it first, like the rest.
rsync_put() { rm -f "$W/ssh/rsync.bin"; rsync -e "$RSYNC_SSH" "$SRC" "$SSH_USER:$W/ssh/rsync.bin"; }
rsync_get() { rm -f "$W/pull/rsync.bin"; rsync -e "$RSYNC_SSH" "$SSH_USER:$W/ssh/rsync.bin" "$W/pull/rsync.bin"; }
dufs_put() { rm -f "$W/dufs/dufs.bin"; "${CURL[@]}" -T "$SRC" "$DUFS_URL/dufs.bin"; }
dufs_get() { rm -f "$W/pull/dufs.bin"; "${CURL[@]}" -o "$W/pull/dufs.bin" "$DUFS_URL/dufs.bin"; }
ceiling() { "$CEILING" "$SRC" "$W/ceiling.bin" >"$BENCH_TMP/ceiling.out"; }
ceiling_blocking() { "$CEILING" --blocking "$SRC" "$W/ceiling.bin" >"$BENCH_TMP/ceiling.out"; }
ceiling_pull() { "$CEILING" --pull "$W/data/users/bench/files/big.bin" "$W/pull/ceiling.bin" >"$BENCH_TMP/ceiling.out"; }

case_big() {
  mkdir -p "$W/pull" "$W/ssh"
  # Contenders: key, server pid, function. Alternated within each run.
  local -a keys=(xpush:XFERD_PID:xfer_push sput:SSHD_PID:sftp_put)
  has_peer scp && keys+=(cput:SSHD_PID:scp_put)
  has_peer rsync && keys+=(rput:SSHD_PID:rsync_put)
  has_peer dufs && keys+=(dput:DUFS_PID:dufs_put)
  keys+=(xpull:XFERD_PID:xfer_pull sget:SSHD_PID:sftp_get)
  has_peer scp && keys+=(cget:SSHD_PID:scp_get)
  has_peer rsync && keys+=(rget:SSHD_PID:rsync_get)
  has_peer dufs && keys+=(dget:DUFS_PID:dufs_get)
  # The ceilings run on loopback: not over the link of the lan case.
  [ "${BIG_CEILING:-1}" = 1 ] && keys+=(ceil:0:ceiling ceilb:0:ceiling_blocking ceilp:0:ceiling_pull)
  # One untimed round first, so every source of a download exists and every destination
  # exists (and is deleted) in the first timed round.
  local k key pidvar f
  for k in "${keys[@]}"; do IFS=: read -r key pidvar f <<<"$k"; "$f" >/dev/null 2>&1 || { say "$f failed"; "$f"; }; done
  for i in $(seq "$RUNS"); do
    say "  big file, run $i of $RUNS"
    for k in "${keys[@]}"; do
      IFS=: read -r key pidvar f <<<"$k"
      local pid=0; [ "$pidvar" != 0 ] && pid=${!pidvar}
      sample "$pid" "$f" "$key"
    done
  done
  cmp "$SRC" "$W/pull/big.bin" || { say "xfer pull result differs!"; return 1; }
  cmp "$SRC" "$W/pull/sftp.bin" || { say "sftp get result differs!"; return 1; }

  report "### ${SIZE_MIB} MiB file, $PLACE_LABEL, median of $RUNS"
  report ""
  report "| operation | MB/s | s | vs xfer | CPU s/GiB client | CPU s/GiB server | CPU s/GiB total |"
  report "|---|---|---|---|---|---|---|"
  big_row "xfer push" xpush xpush
  big_row "sftp put" sput xpush
  has_peer scp && big_row "scp upload" cput xpush
  has_peer rsync && big_row "rsync -e ssh upload" rput xpush
  has_peer dufs && big_row "dufs PUT (curl)" dput xpush
  big_row "xfer pull" xpull xpull
  big_row "sftp get" sget xpull
  has_peer scp && big_row "scp download" cget xpull
  has_peer rsync && big_row "rsync -e ssh download" rget xpull
  has_peer dufs && big_row "dufs GET (curl)" dget xpull
  local push_ceiling='' pull_ceiling=''
  if [ "${BIG_CEILING:-1}" = 1 ]; then
    big_row "ceiling: tokio, file threads (bare TLS, hash, write)" ceil xpush
    big_row "ceiling: blocking threads (bare TLS, hash, write)" ceilb xpush
    big_row "ceiling of a pull: xferd's copy read as a download reads it" ceilp xpull
    # The ceiling is the faster of the two designs.
    local best=ceil
    awk -v a="$(med ceil)" -v b="$(med ceilb)" 'BEGIN {exit !(b < a)}' && best=ceilb
    push_ceiling=$(awk -v a="$(med xpush)" -v c="$(med $best)" 'BEGIN {printf ", %.0f %% of the ceiling", c / a * 100}')
    pull_ceiling=$(awk -v a="$(med xpull)" -v c="$(med ceilp)" 'BEGIN {printf ", %.0f %% of the ceiling", c / a * 100}')
  fi
  report ""
  report "xfer push is $(ratio xpush sput) sftp put$(has_peer rsync && echo ", $(ratio xpush rput) rsync")$(has_peer dufs && echo ", $(ratio xpush dput) dufs PUT")$push_ceiling;"
  report "xfer pull is $(ratio xpull sget) sftp get$(has_peer rsync && echo ", $(ratio xpull rget) rsync")$(has_peer dufs && echo ", $(ratio xpull dget) dufs GET")$pull_ceiling."
  report ""
}

# A row: label, key, the xfer key it is compared with ("vs xfer": how many times faster
# xfer is).
big_row() {
  local vs='—'
  [ "$2" != "$3" ] && vs=$(ratio "$3" "$2")
  local c s
  c=$(cpu_gib C "$2" "$BYTES"); s=$(cpu_gib S "$2" "$BYTES")
  case $2 in ceil*) s='(in client)' ;; esac
  report "| $1 | $(mbps "$2" "$BYTES") | $(printf '%.2f' "$(med "$2")") | $vs | $c | $s | $(awk -v c="$c" -v s="${s/(in client)/0}" 'BEGIN {printf "%.2f", c + s}') |"
}
