#!/usr/bin/env bash
# Memory after connections close (docs/TESTING.md): RSS of one xferd before, at the
# peak of, and after LOGINS (100) password logins 10 at a time, then CLIENTS (500)
# connections that log in with a session, push a 4 KiB file and close, PAR (16: limits.max_transfers_per_user) at a
# time. Prints one line: `rss_kib before=… peak=… after=…`.
# Binaries from XFER_BIN_DIR (tests/long/run.sh sets the release ones); extra
# environment for the daemon in XFERD_ENV (e.g. "MALLOC_ARENA_MAX=2").
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
bin=${XFER_BIN_DIR:-$root/target/debug}
clients=${CLIENTS:-500}
par=${PAR:-16}
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] && cp "$tmp/clients.err" /tmp/mem-clients.err; rm -rf "$tmp"; }
trap cleanup EXIT
export XFERD_CONFIG=/dev/null
pw=memory-suite-password
echo "$pw" | "$bin/xferd" --data-dir "$tmp/data" user add alice --password-stdin --create >/dev/null
# shellcheck disable=SC2086
env ${XFERD_ENV:-} "$bin/xferd" --data-dir "$tmp/data" --listen 127.0.0.1:0 >"$tmp/out" 2>"$tmp/log" &
pid=$!
for _ in $(seq 300); do
    grep -q '^certificate fingerprint' "$tmp/out" && grep -q ' listening on ' "$tmp/out" && break
    sleep 0.1
done
addr=$(sed -n 's/.* listening on //p' "$tmp/out")
fp=$(sed -n 's/^certificate fingerprint //p' "$tmp/out")
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
head -c 4096 /dev/urandom >"$tmp/small.bin"
before=$(rss)
peak=$before
# Runs `$1` for 1..$2, $3 at a time, sampling the peak RSS meanwhile.
load() {
    seq "$2" | xargs -P "$3" -I{} bash -c "$1 {}" 2>>"$tmp/clients.err" &
    local job=$!
    while kill -0 "$job" 2>/dev/null; do
        r=$(rss); [ "$r" -gt "$peak" ] && peak=$r
        sleep 0.2
    done
    wait "$job" || true
}
# Password logins (argon2: ~19 MiB each while it runs), LOGINS of them, 10 at a time.
login_one() {
    local home="$tmp/l$1"
    mkdir -p "$home"
    echo "$pw" | XFER_HOME="$home" "$bin/xfer" login "alice@$addr" --password-stdin --fingerprint "$fp" >/dev/null
    rm -rf "$home"
}
# Connections that log in with the saved session, push 4 KiB and close.
push_one() {
    XFER_HOME="$tmp/home" "$bin/xfer" push -q --force "$tmp/small.bin" "f$1.bin"
}
export -f login_one push_one
export tmp pw addr fp bin
load login_one "${LOGINS:-100}" 10
mkdir -p "$tmp/home"
echo "$pw" | XFER_HOME="$tmp/home" "$bin/xfer" login "alice@$addr" --password-stdin --fingerprint "$fp" >/dev/null
load push_one "$clients" "$par"
# Connections close when the clients exit: wait until the daemon itself reports none open
# (its control socket answers `status` without counting as a connection).
open_connections() {
    "$bin/xferd" --data-dir "$tmp/data" status --json |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)["connections"]))'
}
for _ in $(seq 300); do
    [ "$(open_connections)" = 0 ] && break
    sleep 0.1
done
after=$(rss)
failed=$(grep -c . "$tmp/clients.err" || true)
echo "rss_kib before=$before peak=$peak after=$after logins=${LOGINS:-100} pushes=$clients par=$par client_errors=$failed env=${XFERD_ENV:-none}"
