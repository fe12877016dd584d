# Load: what many connections cost the daemon, from bench/load (`xfer-load`, one client
# process speaking the raw protocol). Independent of the place: run once, on tmpfs,
# against an xferd of its own whose limits let one benchmark client in:
#   - chat fan-out: FANOUT_MEMBERS (1,000) users on a connection each in one channel;
#     FANOUT_ONE (50) messages said there one at a time (each once every member has the
#     one before: one message's fan-out, measured alone), then FANOUT_MESSAGES (200), one
#     every 10 ms (100,000 deliveries a second, sustained); delivery time p50/p99 of each
#     (sent to read, both clocks in the client process) and deliveries lost;
#   - idle authenticated connections: IDLE_CONNS (10,000) token logins held open; the
#     daemon's resident memory per connection;
#   - token re-login: 5 s of connect + token login + close, 8 at a time; logins per
#     second and the daemon's CPU per login.
# The members share the `bench` password hash (copied into the password file under
# their names), so setting up 1,000 accounts costs no argon2 runs; each member's one
# password login does.

FANOUT_MEMBERS=${FANOUT_MEMBERS:-1000} FANOUT_MESSAGES=${FANOUT_MESSAGES:-200} FANOUT_ONE=${FANOUT_ONE:-50}
IDLE_CONNS=${IDLE_CONNS:-10000}

case_load() {
  local d=$BENCH_TMP/load pw=bench-password-1 hash pid fp addr line
  mkdir -p "$d"
  # 10,000 sockets in the client and as many in the daemon (it inherits the limit).
  ulimit -n "$(ulimit -Hn)"
  [ "$(ulimit -n)" -gt $((IDLE_CONNS + 1000)) ] || say "  ulimit -n is $(ulimit -n): the idle case may fail"
  echo "$pw" | "$XFERD" --data-dir "$d/data" user add --create bench --password-stdin >/dev/null
  hash=$(sed -n 's/^bench://p' "$d/data/passwd")
  for i in $(seq -f %04g 1 "$FANOUT_MEMBERS"); do echo "fan$i:$hash"; done >>"$d/data/passwd"
  cat >"$d/xferd.toml" <<CFG
[limits]
max_connections = $((IDLE_CONNS + FANOUT_MEMBERS + 100))
unauthenticated_per_source = 1024
unauthenticated_start = 100000
unauthenticated_full = 100000
[chat]
messages_per_sec = 1000
message_burst = 1000
[login]
source_burst = 100000
user_burst = 100000
CFG
  "$XFERD" --config "$d/xferd.toml" --data-dir "$d/data" --listen 127.0.0.1:0 >"$d/xferd.out" 2>"$d/xferd.log" &
  pid=$!
  for _ in $(seq 200); do grep -q 'listening on' "$d/xferd.out" 2>/dev/null && break; sleep 0.05; done
  addr=$(sed -n 's/.* listening on //p' "$d/xferd.out")
  fp=$(grep -o 'SHA256:[^ ]*' "$d/xferd.out" | head -1)
  [ -n "$addr" ] && [ -n "$fp" ] || { say "xferd did not start: $(cat "$d/xferd.log")"; kill "$pid"; return 1; }

  say "  chat fan-out: $FANOUT_MEMBERS members, $FANOUT_MESSAGES messages…"
  local out fan one idle relog s0 s1
  out=$("$LOAD" fanout "$addr" "$fp" "$pw" "$FANOUT_MEMBERS" "$FANOUT_MESSAGES" 10 "$FANOUT_ONE")
  fan=$(grep '^figure fanout:' <<<"$out")
  one=$(grep '^figure fanout_one:' <<<"$out")
  say "  token re-logins for 5 s…"
  s0=$(proc_cpu "$pid")
  relog=$("$LOAD" relogin "$addr" "$fp" "$pw" 5 8 | grep '^figure relogin:')
  s1=$(proc_cpu "$pid")
  say "  $IDLE_CONNS idle authenticated connections…"
  idle=$("$LOAD" idle "$addr" "$fp" "$pw" "$pid" "$IDLE_CONNS" | grep '^figure idle:')
  kill "$pid" 2>/dev/null && { wait "$pid" 2>/dev/null || true; }

  field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
  report "### Load: chat fan-out, idle connections, token re-login (bench/load, tmpfs)"
  report ""
  report "| figure | value | target |"
  report "|---|---|---|"
  report "| chat fan-out to $(field "$one" members) members, one message at a time ($(field "$one" messages) of them): delivery p50 | $(field "$one" p50_ms) ms | |"
  report "| the same, p99 (max $(field "$one" max_ms) ms) | $(field "$one" p99_ms) ms | ≤ 20 ms |"
  report "| chat fan-out sustained, $(field "$fan" messages) messages one every $(field "$fan" interval_ms) ms: delivery p50 | $(field "$fan" p50_ms) ms | |"
  report "| the same, p99 (max $(field "$fan" max_ms) ms) | $(field "$fan" p99_ms) ms | |"
  report "| the same, deliveries lost of $(field "$fan" expected) | $(field "$fan" lost) | 0 |"
  report "| RSS per idle authenticated connection at $(field "$idle" connections) | $(field "$idle" per_connection_kib) KiB | ≤ 32 KiB |"
  report "| token re-logins per second ($(field "$relog" concurrency) at a time, one client process) | $(field "$relog" per_second) | ≥ 1,000 |"
  report "| daemon CPU per token login | $(awk -v a="$s0" -v b="$s1" -v n="$(field "$relog" logins)" 'BEGIN {printf "%.2f", (b - a) / n * 1000}') ms | |"
  report ""
  report "\`$one\`"
  report ""
  report "\`$fan\`"
  report ""
  report "\`$relog\`"
  report ""
  report "\`$idle\`"
  report ""
}
