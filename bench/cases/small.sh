# Many files: a tree of $SMALL_FILES files of 2 KiB in 20 folders, and one of
# $MEDIUM_FILES files of 1 MiB, pushed and pulled recursively by xfer and by sftp -r,
# scp -r and rsync -a over ssh; then the small tree re-pushed with one file changed
# (`xfer push -r --update` against `rsync -a`). Sourced by run.sh inside a place ($W).

make_tree() { # DIR COUNT BYTES FOLDERS
  python3 - "$@" <<'PY'
import os, sys
d, n, size, folders = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    sub = os.path.join(d, f"d{i % folders:02}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:05}.bin"), "wb") as f:
        f.write(os.urandom(size))
PY
}

# Each contender writes the whole tree into an empty place: what the last run left is
# removed first, untimed (sample runs the _prep functions before the clock starts, so
# the writes still go into memory just freed). Until 2026-12-02 the removal was timed;
# that added the same local `rm -rf` to both sides of a pull, and a whole second
# connection (`xfer rm -r`) to xfer's push against a local `rm -rf` for the peers.
tree_xpush_prep() { "$XFER" rm -r "$TREE"; }
tree_xpush() { "$XFER" push -q -r "$W/trees/$TREE"; }
tree_xpull_prep() { rm -rf "$W/pull/$TREE"; }
tree_xpull() { "$XFER" pull -q -r "$TREE" "$W/pull/"; }
tree_sput_prep() { rm -rf "$W/ssh/$TREE"; }
tree_sput() { "${SFTP[@]}" <<<"put -r $W/trees/$TREE $W/ssh/$TREE"; }
tree_sget_prep() { rm -rf "$W/pull/$TREE"; }
tree_sget() { "${SFTP[@]}" <<<"get -r $W/ssh/$TREE $W/pull/$TREE"; }
tree_cput_prep() { rm -rf "$W/ssh/$TREE"; }
tree_cput() { "${SCP[@]}" -r "$W/trees/$TREE" "$SSH_USER:$W/ssh/$TREE"; }
tree_cget_prep() { rm -rf "$W/pull/$TREE"; }
tree_cget() { "${SCP[@]}" -r "$SSH_USER:$W/ssh/$TREE" "$W/pull/$TREE"; }
tree_rput_prep() { rm -rf "$W/ssh/$TREE"; }
tree_rput() { rsync -a -e "$RSYNC_SSH" "$W/trees/$TREE/" "$SSH_USER:$W/ssh/$TREE/"; }
tree_rget_prep() { rm -rf "$W/pull/$TREE"; }
tree_rget() { rsync -a -e "$RSYNC_SSH" "$SSH_USER:$W/ssh/$TREE/" "$W/pull/$TREE/"; }
# One file changed (new content, same size), then the tree sent again over what is there.
touch_one() { head -c 2048 /dev/urandom >"$W/trees/$TREE/d07/f00007.bin"; }
tree_xupdate() { touch_one; "$XFER" push -q -r --update "$W/trees/$TREE"; }
tree_rupdate() { touch_one; rsync -a -e "$RSYNC_SSH" "$W/trees/$TREE/" "$SSH_USER:$W/ssh/$TREE/"; }

small_keys() {
  KEYS=(xpush:XFERD_PID:tree_xpush sput:SSHD_PID:tree_sput)
  has_peer scp && KEYS+=(cput:SSHD_PID:tree_cput)
  has_peer rsync && KEYS+=(rput:SSHD_PID:tree_rput)
  KEYS+=(sget:SSHD_PID:tree_sget)
  has_peer scp && KEYS+=(cget:SSHD_PID:tree_cget)
  has_peer rsync && KEYS+=(rget:SSHD_PID:tree_rget)
  # Last, so the check below looks at what xfer pulled.
  KEYS+=(xpull:XFERD_PID:tree_xpull)
}

# Runs every contender on tree $TREE ($1 files) and reports.
tree_round() {
  local n=$1 label=$2 k key pidvar f
  small_keys
  for k in "${KEYS[@]}"; do
    IFS=: read -r key pidvar f <<<"$k"
    "${f}_prep" >/dev/null 2>&1 || true
    "$f" >/dev/null 2>&1 || { say "$f failed"; "$f"; }
  done
  for i in $(seq "$RUNS"); do
    say "  $label, run $i of $RUNS"
    for k in "${KEYS[@]}"; do
      IFS=: read -r key pidvar f <<<"$k"
      sample "${!pidvar}" "$f" "$TREE-$key"
    done
    # What xfer pulled (before the update below changes the source).
    diff -r "$W/trees/$TREE" "$W/pull/$TREE" >/dev/null || { say "the pulled $TREE tree differs!"; return 1; }
    if [ "$TREE" = small ]; then
      sample "$XFERD_PID" tree_xupdate "$TREE-xupd"
      has_peer rsync && sample "$SSHD_PID" tree_rupdate "$TREE-rupd"
    fi
  done
  report "### $label, $PLACE_LABEL, median of $RUNS"
  report ""
  report "| operation | s | files/s | vs xfer |"
  report "|---|---|---|---|"
  tree_row "xfer push -r" xpush xpush "$n"
  tree_row "sftp put -r" sput xpush "$n"
  has_peer scp && tree_row "scp -r upload" cput xpush "$n"
  has_peer rsync && tree_row "rsync -a -e ssh upload" rput xpush "$n"
  tree_row "xfer pull -r" xpull xpull "$n"
  tree_row "sftp get -r" sget xpull "$n"
  has_peer scp && tree_row "scp -r download" cget xpull "$n"
  has_peer rsync && tree_row "rsync -a -e ssh download" rget xpull "$n"
  if [ "$TREE" = small ]; then
    tree_row "xfer push -r --update, one file changed" xupd xupd "$n"
    has_peer rsync && tree_row "rsync -a, one file changed" rupd xupd "$n"
  fi
  report ""
}

tree_row() {
  local vs='—'
  [ "$2" != "$3" ] && vs=$(ratio "$TREE-$3" "$TREE-$2")
  report "| $1 | $(printf '%.2f' "$(med "$TREE-$2")") | $(awk -v n="$4" -v t="$(med "$TREE-$2")" 'BEGIN {printf "%.0f", n / t}') | $vs |"
}

case_small() {
  mkdir -p "$W/trees" "$W/pull" "$W/ssh"
  say "  making the trees…"
  make_tree "$W/trees/small" "$SMALL_FILES" 2048 20
  make_tree "$W/trees/medium" "$MEDIUM_FILES" 1048576 4
  TREE=small tree_round "$SMALL_FILES" "$SMALL_FILES files of 2 KiB in 20 folders"
  TREE=medium tree_round "$MEDIUM_FILES" "$MEDIUM_FILES files of 1 MiB in 4 folders"
}
