#!/usr/bin/env bash
# Garage as a three-node cluster (README "Scaling out"): nodes on 127.0.0.1, 127.0.0.2
# and 127.0.0.3, replication factor 3; xferd A talks to node 1, xferd B to node 2, both
# on one bucket. A file pushed through A comes back whole through B; with node 3 killed
# (a quorum of two left) pushes and pulls go on through both, and a push cut at 40 %
# through A resumes through B; node 3 restarted catches up. A minute or two.
# Needs garage (cargo install garage, see .ci/run) and b3sum.
# Binaries: $XFER_BIN_DIR (tests/long/run.sh sets it), else target/debug, built if missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
bin=${XFER_BIN_DIR:-$root/target/debug}
if [ ! -x "$bin/xferd" ] || [ ! -x "$bin/xfer" ]; then
    cargo build --quiet --locked --bins -p xferd -p xfer --manifest-path "$root/Cargo.toml"
fi
command -v garage >/dev/null || { echo "garage-cluster: garage is not installed" >&2; exit 2; }
command -v b3sum >/dev/null || { echo "garage-cluster: b3sum is not installed" >&2; exit 2; }
tmp=$(mktemp -d)
declare -A gpid
pids=()
cleanup() {
    for p in "${pids[@]}" "${gpid[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "garage-cluster: $*" >&2; exit 1; }

# Waits until FILE has a line matching SED's capture, printing the capture.
wait_line() {
    local file=$1 expr=$2 got
    for _ in $(seq 1 600); do
        got=$(sed -n "$expr" "$file" 2>/dev/null | head -1)
        [ -n "$got" ] && { echo "$got"; return 0; }
        sleep 0.1
    done
    echo "garage-cluster: no line in $file:" >&2
    cat "$file" >&2
    return 1
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPC=$(port) S3=$(port) ADMIN=$(port)
SECRET=$(openssl rand -hex 32)
start_node() { # N
    local n=$1 d=$tmp/g$1
    mkdir -p "$d"
    cat >"$d/garage.toml" <<EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.$n:$RPC"
rpc_public_addr = "127.0.0.$n:$RPC"
rpc_secret = "$SECRET"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.$n:$S3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.$n:$ADMIN"
EOF
    : >"$d/log"
    RUST_LOG=garage=info garage -c "$d/garage.toml" server >>"$d/log" 2>&1 &
    gpid[$n]=$!
    wait_line "$d/log" 's/.*\(S3 API server listening\).*/\1/p' >/dev/null
}
g() { garage -c "$tmp/g1/garage.toml" "$@"; }

for n in 1 2 3; do start_node $n; done
ids=()
for n in 1 2 3; do ids+=("$(garage -c "$tmp/g$n/garage.toml" node id -q)"); done
g node connect "${ids[1]}" >/dev/null
g node connect "${ids[2]}" >/dev/null
for id in "${ids[@]}"; do g layout assign -z dc1 -c 1G "${id%@*}" >/dev/null; done
g layout apply --version 1 >/dev/null
key=$(g key create xferd)
key_id=$(sed -n 's/^Key ID: *//p' <<<"$key")
secret=$(sed -n 's/^Secret key: *//p' <<<"$key")
g bucket create xfer >/dev/null
g bucket allow --read --write --owner xfer --key xferd >/dev/null
echo "garage-cluster: three nodes, layout applied"

printf 'access_key_id = "%s"\nsecret_access_key = "%s"\n' "$key_id" "$secret" >"$tmp/creds.toml"
chmod 600 "$tmp/creds.toml"
start_xferd() { # NAME NODE
    local name=$1 node=$2 d=$tmp/$1
    mkdir -p "$d"
    cat >"$tmp/$name.toml" <<EOF
data_dir = "$d"
[storage]
backend = "s3"
[storage.s3]
endpoint = "http://127.0.0.$node:$S3"
bucket = "xfer"
credentials_file = "$tmp/creds.toml"
EOF
    [ -f "$tmp/a/passwd" ] || echo 'long-suite-pw-1' | "$bin/xferd" --config "$tmp/$name.toml" user add --create alice --password-stdin >/dev/null
    if [ "$name" = b ]; then mkdir -p "$d/tls"; cp "$tmp/a/passwd" "$d/"; cp "$tmp/a/tls/"*.pem "$d/tls/"; fi
    "$bin/xferd" --config "$tmp/$name.toml" --listen 127.0.0.1:0 >"$d.out" 2>"$d.log" &
    pids+=($!)
    wait_line "$d.out" 's/.* listening on //p'
}
addr_a=$(start_xferd a 1)
addr_b=$(start_xferd b 2)
login() { # HOME ADDR
    echo 'long-suite-pw-1' | XFER_HOME=$1 "$bin/xfer" login "alice@$2" --password-stdin --accept-new >/dev/null
}
login "$tmp/ha" "$addr_a"
login "$tmp/hb" "$addr_b"
xa() { XFER_HOME=$tmp/ha "$bin/xfer" "$@"; }
xb() { XFER_HOME=$tmp/hb "$bin/xfer" "$@"; }

head -c $((64 << 20)) /dev/urandom >"$tmp/one.bin"
want=$(b3sum --no-names "$tmp/one.bin")
xa push -q "$tmp/one.bin"
xb pull -q one.bin "$tmp/one.back"
[ "$(b3sum --no-names "$tmp/one.back")" = "$want" ] || fail "pulled through B differs from what A stored"
echo "garage-cluster: pushed through A, pulled whole through B"

kill "${gpid[3]}"; wait "${gpid[3]}" 2>/dev/null || true
head -c $((96 << 20)) /dev/urandom >"$tmp/two.bin"
want2=$(b3sum --no-names "$tmp/two.bin")
XFER_HOME=$tmp/ha "$bin/xfer" push -q --limit-rate 20M "$tmp/two.bin" &
push=$!
for _ in $(seq 1 600); do
    got=$(xb ls --partial --json 2>/dev/null | python3 -c 'import json,sys; print(next((e["received"] for e in json.load(sys.stdin) if e["name"]=="two.bin"), 0))' 2>/dev/null || echo 0)
    [ "${got:-0}" -ge $((38 << 20)) ] && break
    sleep 0.1
done
[ "${got:-0}" -ge $((38 << 20)) ] || fail "A never held 40 % of two.bin (node 3 down)"
kill -9 "$push" 2>/dev/null || true; wait "$push" 2>/dev/null || true
xb push -q "$tmp/two.bin"
grep 'event="upload"' "$tmp/b.log" | grep -q 'two.bin.*resumed_from=[1-9]' \
    || fail "B did not resume A's upload: $(grep 'event="upload"' "$tmp/b.log")"
xa pull -q two.bin "$tmp/two.back"
[ "$(b3sum --no-names "$tmp/two.back")" = "$want2" ] || fail "two.bin differs after the resume"
echo "garage-cluster: node 3 down: a push cut at 40 % through A resumed through B, whole"

start_node 3
xb pull -q --force one.bin "$tmp/one.back"
[ "$(b3sum --no-names "$tmp/one.back")" = "$want" ] || fail "one.bin differs after node 3 returned"
echo "garage-cluster: ok"
