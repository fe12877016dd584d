# The S3 backend: the big file pushed and pulled through xferd on the local backend and
# through a second xferd whose files live in a Garage bucket on loopback (one node, its
# data in the same place), alternated in one run. Server CPU for the S3 side adds
# Garage's to xferd's. Sourced by run.sh inside a place ($W); needs $SRC and $BYTES.

# A single-node Garage in $W/garage with a bucket and key; sets GARAGE_PID, GARAGE_CFG,
# S3_ENDPOINT, S3_KEY_ID, S3_SECRET.
start_garage() {
  command -v garage >/dev/null || {
    say "  installing garage (cargo install, about 10 minutes on 2 cores)…"
    cargo install --locked --quiet garage --version 2.5.0 --no-default-features --features bundled-libs,sqlite
  }
  local d=$W/garage rpc s3 admin
  mkdir -p "$d"
  rpc=$(free_port); s3=$(free_port); admin=$(free_port)
  GARAGE_CFG=$d/garage.toml
  cat >"$GARAGE_CFG" <<EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(openssl rand -hex 32)"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
  RUST_LOG=garage=info garage -c "$GARAGE_CFG" server >"$d/garage.log" 2>&1 &
  GARAGE_PID=$!
  for _ in $(seq 200); do grep -q 'S3 API server listening' "$d/garage.log" && break; sleep 0.05; done
  local id key
  id=$(garage -c "$GARAGE_CFG" node id -q | cut -d@ -f1)
  garage -c "$GARAGE_CFG" layout assign -z dc1 -c 10G "$id" >/dev/null
  garage -c "$GARAGE_CFG" layout apply --version 1 >/dev/null
  key=$(garage -c "$GARAGE_CFG" key create bench)
  S3_KEY_ID=$(sed -n 's/^Key ID: *//p' <<<"$key")
  S3_SECRET=$(sed -n 's/^Secret key: *//p' <<<"$key")
  garage -c "$GARAGE_CFG" bucket create xfer >/dev/null
  garage -c "$GARAGE_CFG" bucket allow --read --write --owner xfer --key bench >/dev/null
  S3_ENDPOINT=http://127.0.0.1:$s3
}

# A second xferd on the bucket, logged in from its own XFER_HOME; sets XFERD_S3_PID and
# S3_HOME.
start_xferd_s3() {
  local d=$W/data-s3
  mkdir -p "$d"
  printf 'access_key_id = "%s"\nsecret_access_key = "%s"\n' "$S3_KEY_ID" "$S3_SECRET" >"$W/s3-creds.toml"
  chmod 600 "$W/s3-creds.toml"
  cat >"$W/xferd-s3.toml" <<EOF
data_dir = "$d"
[storage]
backend = "s3"
[storage.s3]
endpoint = "$S3_ENDPOINT"
bucket = "xfer"
credentials_file = "$W/s3-creds.toml"
EOF
  echo 'bench-password-1' | "$XFERD" --config "$W/xferd-s3.toml" user add --create bench --password-stdin >/dev/null
  "$XFERD" --config "$W/xferd-s3.toml" --listen 127.0.0.1:0 >"$W/xferd-s3.out" 2>"$W/xferd-s3.log" &
  XFERD_S3_PID=$!
  for _ in $(seq 200); do grep -q 'listening on' "$W/xferd-s3.out" 2>/dev/null && break; sleep 0.05; done
  local addr
  addr=$(sed -n 's/.* listening on //p' "$W/xferd-s3.out")
  [ -n "$addr" ] || { say "xferd (s3) did not start: $(cat "$W/xferd-s3.log")"; return 1; }
  S3_HOME=$W/xfer-home-s3
  echo 'bench-password-1' | XFER_HOME=$S3_HOME "$XFER" login "bench@$addr" --password-stdin --accept-new >/dev/null 2>&1
}

s3_push() { XFER_HOME=$S3_HOME "$XFER" rm s3.bin 2>/dev/null || true; XFER_HOME=$S3_HOME "$XFER" push -q "$SRC" s3.bin; }
s3_pull() { rm -f "$W/pull/s3.bin"; XFER_HOME=$S3_HOME "$XFER" pull -q --force s3.bin "$W/pull/"; }

case_s3() {
  mkdir -p "$W/pull"
  start_garage
  start_xferd_s3
  local -a keys=(lpush:xfer_push s3push:s3_push lpull:xfer_pull s3pull:s3_pull)
  local k key f g0 g1
  for k in "${keys[@]}"; do IFS=: read -r key f <<<"$k"; "$f" >/dev/null 2>&1 || { say "$f failed"; "$f"; }; done
  declare -A G
  for i in $(seq "$RUNS"); do
    say "  S3 backend, run $i of $RUNS"
    for k in "${keys[@]}"; do
      IFS=: read -r key f <<<"$k"
      case $key in
        s3*)
          g0=$(proc_cpu "$GARAGE_PID")
          sample "$XFERD_S3_PID" "$f" "$key"
          g1=$(proc_cpu "$GARAGE_PID")
          G[$key]+="$(echo "$g1 - $g0" | bc -l) " ;;
        *) sample "$XFERD_PID" "$f" "$key" ;;
      esac
    done
  done
  cmp "$SRC" "$W/pull/s3.bin" || { say "xfer pull from the bucket differs!"; return 1; }
  report "### ${SIZE_MIB} MiB file through xferd: local backend vs S3 backend (Garage, one node on loopback), $PLACE_LABEL, median of $RUNS"
  report ""
  report "| operation | MB/s | s | S3 vs local | CPU s/GiB client | CPU s/GiB xferd | CPU s/GiB Garage |"
  report "|---|---|---|---|---|---|---|"
  local gib garage
  for row in "push, local backend:lpush:lpush" "push, S3 backend:s3push:lpush" "pull, local backend:lpull:lpull" "pull, S3 backend:s3pull:lpull"; do
    IFS=: read -r label key base <<<"$row"
    gib=$(awk -v b="$BYTES" 'BEGIN {print b / 1073741824}')
    garage='—'
    [ -n "${G[$key]:-}" ] && garage=$(echo "${G[$key]}" | median | awk -v g="$gib" '{printf "%.2f", $1 / g}')
    local vs='—'
    [ "$key" != "$base" ] && vs=$(awk -v a="$(med "$base")" -v b="$(med "$key")" 'BEGIN {printf "%.2f×", a / b}')
    report "| $label | $(mbps "$key" "$BYTES") | $(printf '%.2f' "$(med "$key")") | $vs | $(cpu_gib C "$key" "$BYTES") | $(cpu_gib S "$key" "$BYTES") | $garage |"
  done
  report ""
  report "\"S3 vs local\" is the S3 backend's speed as a fraction of the local backend's (1.00× = as fast)."
  report ""
  kill "$XFERD_S3_PID" "$GARAGE_PID" 2>/dev/null
  wait "$XFERD_S3_PID" "$GARAGE_PID" 2>/dev/null || true
}
