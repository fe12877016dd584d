# Resume: a push killed once the server holds 90 % of the file (by bytes written into
# the partial), then run again; the re-run's time against a full push. Then the same with
# the push stopped instead of killed, its connection left open, so the re-run takes the
# upload over from it. Sourced by run.sh inside a place ($W); needs $SRC and $BYTES.

# Bytes the partial upload holds on the server: the .part file is sparse until complete,
# so its allocated blocks are what was written.
partial_bytes() {
  local f
  for f in "$W"/data/users/bench/partials/*.part; do
    [ -f "$f" ] && { echo $(( $(stat -c %b "$f") * 512 )); return; }
  done
  echo 0
}

# Starts a push and kills the client (SIGKILL) when the partial holds $1 % of the file.
# The push is slowed to about two seconds for the whole file, so the poll sees 90 %
# before the end even for the smoke run's small file (the re-run is not slowed).
push_killed_at() {
  "$XFER" rm resume.bin >/dev/null 2>&1 || true
  "$XFER" rm --partial resume.bin >/dev/null 2>&1 || true
  local want=$((BYTES * $1 / 100)) pid
  "$XFER" push -q --limit-rate "$((BYTES / 2 + 1))" "$SRC" resume.bin >/dev/null 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null && [ "$(partial_bytes)" -lt "$want" ]; do sleep 0.005; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # The daemon saves the upload's state when it sees the connection close.
  local held=0
  for _ in $(seq 200); do
    held=$("$XFER" ls --json 2>/dev/null | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e.get("name") == "resume.bin" and e.get("received") is not None:
        print(e["received"]); break
else:
    print(0)' 2>/dev/null || echo 0)
    [ "$held" -ge "$want" ] && break
    sleep 0.05
  done
  # The full push's file, removed above, is freed by xferd after the answer: not inside
  # the re-run's clock (as sample does after every _prep).
  settle_xferd
  echo "$held"
}

# Starts a push and stops the client (SIGSTOP) when the partial holds $1 % of the file:
# its connection stays open, as after a network cut the daemon has not noticed, so the
# re-run takes the upload over from it. Sets STOPPED to the stopped client's pid.
push_stopped_at() {
  "$XFER" rm resume.bin >/dev/null 2>&1 || true
  "$XFER" rm --partial resume.bin >/dev/null 2>&1 || true
  local want=$((BYTES * $1 / 100))
  "$XFER" push -q --limit-rate "$((BYTES / 2 + 1))" "$SRC" resume.bin >/dev/null 2>&1 &
  STOPPED=$!
  while kill -0 "$STOPPED" 2>/dev/null && [ "$(partial_bytes)" -lt "$want" ]; do sleep 0.005; done
  kill -STOP "$STOPPED" 2>/dev/null || true
  settle_xferd
}

# Ends the client push_stopped_at stopped.
end_stopped() {
  kill -9 "$STOPPED" 2>/dev/null || true
  kill -CONT "$STOPPED" 2>/dev/null || true
  wait "$STOPPED" 2>/dev/null || true
}

# The last run's file is removed untimed (sample runs the _prep function first).
resume_full_prep() { "$XFER" rm resume.bin; }
resume_full() { "$XFER" push -q "$SRC" resume.bin; }
resume_rerun() { "$XFER" push -q "$SRC" resume.bin; }

case_resume() {
  local pct=${RESUME_AT:-90} held held_sum=0
  for i in $(seq "$RUNS"); do
    say "  resume at $pct %, run $i of $RUNS"
    sample "$XFERD_PID" resume_full rfull
    held=$(push_killed_at "$pct")
    held_sum=$((held_sum + held))
    sample "$XFERD_PID" resume_rerun rre
    push_stopped_at "$pct"
    sample "$XFERD_PID" resume_rerun rover
    end_stopped
  done
  report "### Resume of a ${SIZE_MIB} MiB push killed at $pct %, $PLACE_LABEL, median of $RUNS"
  report ""
  report "| operation | s | CPU s client | CPU s server |"
  report "|---|---|---|---|"
  report "| full push | $(printf '%.2f' "$(med rfull)") | $(echo "${C[rfull]}" | median) | $(echo "${S[rfull]}" | median) |"
  report "| re-run after the kill (server held $((held_sum / RUNS / 1048576)) MiB on average) | $(printf '%.2f' "$(med rre)") | $(echo "${C[rre]}" | median) | $(echo "${S[rre]}" | median) |"
  report "| re-run while the stopped push's connection is still open (a takeover) | $(printf '%.2f' "$(med rover)") | $(echo "${C[rover]}" | median) | $(echo "${S[rover]}" | median) |"
  report ""
  report "re-run / full push: $(awk -v a="$(med rre)" -v b="$(med rfull)" 'BEGIN {printf "%.0f %%", a / b * 100}') (target ≤ 15 %); after a takeover: $(awk -v a="$(med rover)" -v b="$(med rfull)" 'BEGIN {printf "%.0f %%", a / b * 100}')"
  report ""
}
