#!/usr/bin/env bash
# Network faults, long (docs/TESTING.md "Network faults"): xferd in one network namespace,
# xfer in another, joined by a veth pair (the 10.77.0.0/24 addresses exist only inside
# the two namespaces). Mid-transfer, nftables rules in the server's namespace drop the
# connection's packets (both ways, one way, or for a few seconds); the faulted command
# must end by itself within HANG_LIMIT seconds (the client's 60 s request timeout plus
# slack), and a re-run after the rules are gone must resume to an identical file.
# Prints one line per case: what was dropped, how the command ended and after how long,
# where the re-run resumed from. Needs root, iproute2 and nftables (installed if missing).
# Binaries: $XFER_BIN_DIR (tests/long/run.sh sets it) or target/debug.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
bin=${XFER_BIN_DIR:-$root/target/debug}
[ -x "$bin/xferd" ] || (cd "$root" && cargo build --quiet --bins -p xferd -p xfer)
[ "$(id -u)" = 0 ] || { echo "40-netns needs root (network namespaces, nftables)" >&2; exit 2; }
command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2; }
command -v nft >/dev/null || { apt-get update -qq && apt-get install -y -qq nftables; }

HANG_LIMIT=${XFER_HANG_LIMIT:-150}
SIZE_MIB=${XFER_NETNS_MIB:-64}
RATE=${XFER_NETNS_RATE:-8M}
S=xfer-s-$$ C=xfer-c-$$
work=$(mktemp -d)
dpid= cpid=
cleanup() {
    for p in $dpid $cpid; do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$S" 2>/dev/null || true
    ip netns del "$C" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$S"
ip netns add "$C"
ip link add "xs$$" type veth peer name "xc$$"
ip link set "xs$$" netns "$S"
ip link set "xc$$" netns "$C"
ip -n "$S" addr add 10.77.0.1/24 dev "xs$$"
ip -n "$C" addr add 10.77.0.2/24 dev "xc$$"
for ns in "$S" "$C"; do ip -n "$ns" link set lo up; done
ip -n "$S" link set "xs$$" up
ip -n "$C" link set "xc$$" up

export XFERD_CONFIG=/dev/null XFER_HOME="$work/home" NO_COLOR=1
pw="correct horse battery"
data="$work/data"
echo "$pw" | "$bin/xferd" --data-dir "$data" user add alice --password-stdin --create >/dev/null
# A short idle timeout, so the daemon also gives up on a dead connection within the run.
printf '[limits]\nidle_timeout_secs = 20\n' >"$work/xferd.toml"
ip netns exec "$S" "$bin/xferd" --data-dir "$data" --config "$work/xferd.toml" \
    --listen 10.77.0.1:7443 >"$work/out" 2>"$work/log" &
dpid=$!
for _ in $(seq 100); do grep -q fingerprint "$work/out" 2>/dev/null && break; sleep 0.1; done
fp=$(sed -n 's/^certificate fingerprint //p' "$work/out")
cx() { ip netns exec "$C" "$bin/xfer" "$@"; }
echo "$pw" | cx login alice@10.77.0.1:7443 --password-stdin --fingerprint "$fp" >/dev/null

# Rules in the server's namespace: "in" drops what reaches xferd, "out" what it sends.
drop() {
    local rules=""
    case $1 in
        both) rules="add rule inet xfer in tcp dport 7443 drop
add rule inet xfer out tcp sport 7443 drop" ;;
        up) rules="add rule inet xfer in tcp dport 7443 drop" ;;
        down) rules="add rule inet xfer out tcp sport 7443 drop" ;;
    esac
    ip netns exec "$S" nft -f - <<EOF
add table inet xfer
add chain inet xfer in { type filter hook input priority 0; }
add chain inet xfer out { type filter hook output priority 0; }
$rules
EOF
}
undrop() { ip netns exec "$S" nft delete table inet xfer 2>/dev/null || true; }

# Bytes of NAME the server holds (its saved state), or 0.
held() {
    cx ls --partial --json 2>/dev/null | python3 -c '
import json, sys
name = sys.argv[1]
print(next((e.get("received") or 0 for e in json.load(sys.stdin) if e["name"] == name), 0))
' "$1" 2>/dev/null || echo 0
}

# Waits for background command PID (started at T0) to end; sets `how` to "exit CODE
# after S s", or kills it and sets "HUNG" past HANG_LIMIT. Not in a subshell: only this
# shell can wait for its child.
ended() {
    local pid=$1 t0=$2 code
    while kill -0 "$pid" 2>/dev/null; do
        if [ $(( $(date +%s) - t0 )) -gt "$HANG_LIMIT" ]; then
            kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
            how="HUNG past ${HANG_LIMIT}s"; return
        fi
        sleep 0.5
    done
    set +e; wait "$pid"; code=$?; set -e
    how="exit $code after $(( $(date +%s) - t0 )) s"
}

status=0
# case: push|pull, what to drop, seconds to keep it (0: until the command ends)
run_case() {
    local kind=$1 way=$2 keep=$3 name="$1-$2-$3.bin"
    local src="$work/$name" cut=$(( (SIZE_MIB << 20) * 3 / 10 ))
    head -c "$((SIZE_MIB << 20))" /dev/urandom >"$src"
    local dest="$work/dest-$name" final
    mkdir -p "$dest"
    if [ "$kind" = pull ]; then
        cx push -q "$src"
        # Not through cx: $! must be xfer itself (ip netns exec execs it).
        ip netns exec "$C" "$bin/xfer" pull -q --limit-rate "$RATE" "$name" "$dest/" 2>"$work/err" &
        final="$dest/$name"
    else
        ip netns exec "$C" "$bin/xfer" push -q --limit-rate "$RATE" "$src" 2>"$work/err" &
        final="$data/users/alice/files/$name"
    fi
    local pid=$!
    cpid=$pid
    # Cut at about 30 %: the server's saved state (push) or the part file (pull).
    for _ in $(seq 600); do
        if [ "$kind" = pull ]; then
            [ "$(stat -c %s "$dest/$name.xfer-part" 2>/dev/null || echo 0)" -ge "$cut" ] && break
        else
            [ "$(held "$name")" -ge "$cut" ] && break
        fi
        sleep 0.1
    done
    drop "$way"
    local t0
    t0=$(date +%s)
    if [ "$keep" -gt 0 ]; then sleep "$keep"; undrop; fi
    ended "$pid" "$t0"
    undrop
    case $how in HUNG*) status=1 ;; esac
    local rerun="not needed" from="-"
    if [ "${how#exit 0 }" = "$how" ]; then
        if if [ "$kind" = pull ]; then cx pull -q "$name" "$dest/"; else cx push -q "$src"; fi 2>"$work/err2"; then
            rerun="ok"
        else
            rerun="FAILED ($(tr -d '\n' <"$work/err2"))"; status=1
        fi
        from=$(grep "$name" "$work/log" | grep -o 'resumed_from=[0-9]*' | tail -1 || true)
        [ "$kind" = pull ] && from=$(grep "$name" "$work/log" | grep -o 'resumed=[a-z]*' | tail -1 || true)
    fi
    if cmp -s "$src" "$final"; then same=identical; else same=DIFFERENT; status=1; fi
    echo "$kind, drop $way$([ "$keep" -gt 0 ] && echo " for ${keep}s") at ~30 %: $how ($(tr -d '\n' <"$work/err" | cut -c1-90)); re-run $rerun ${from}; $same"
    rm -rf "$src" "$dest"
}

run_case push both 0
run_case push up 0
run_case push down 0
run_case push both 5
run_case pull both 0
run_case pull both 5
exit $status
