# Scale: what the long suite measures, called from here rather than duplicated.
# tests/long/suites/70-scale.sh (the standing suite's `measure` module) opens 10,000
# connections that each log in with a token (no argon2), 64 at a time, and holds them
# idle: its figure line gives RSS per idle authenticated connection, and connections
# over seconds gives token re-logins per second. A release build of the test binary
# (several minutes once). Independent of the place: run once.

case_scale() {
  say "  idle connections and token logins: tests/long/suites/70-scale.sh…"
  local line
  line=$(tests/long/suites/70-scale.sh 2>&1 | grep '^figure scale:' | tail -1)
  [ -n "$line" ] || { say "70-scale.sh printed no figure"; return 1; }
  local n secs per
  n=$(sed 's/.*connections=\([0-9]*\).*/\1/' <<<"$line")
  secs=$(sed 's/.*open_secs=\([0-9.]*\).*/\1/' <<<"$line")
  per=$(sed 's/.*per_connection_kib=\([0-9.]*\).*/\1/' <<<"$line")
  report "### Scale (tests/long/suites/70-scale.sh)"
  report ""
  report "| figure | value | target |"
  report "|---|---|---|"
  report "| RSS per idle authenticated connection at $n | $per KiB | ≤ 32 KiB |"
  report "| token logins per second (64 at a time, one client process) | $(awk -v n="$n" -v s="$secs" 'BEGIN {printf "%.0f", n / s}') | ≥ 1,000 |"
  report ""
  report "\`$line\`"
  report ""
}
