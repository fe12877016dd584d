#!/usr/bin/env bash
# TLS scan (docs/TESTING.md, "TLS scan"): sslscan against a real xferd must find only
# TLS 1.3, and only AEAD cipher suites; the same check against a deliberately weak
# `openssl s_server` (TLS 1.2 only, a CBC suite) must fail, which proves the check can
# fail. Takes a few seconds; CI runs it (.ci/run). Needs sslscan and openssl.
# Binaries: $XFER_BIN_DIR (tests/long/run.sh sets it), else target/debug, built if missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
bin=${XFER_BIN_DIR:-$root/target/debug}
if [ ! -x "$bin/xferd" ]; then
    cargo build --quiet --locked --bins -p xferd --manifest-path "$root/Cargo.toml"
fi
command -v sslscan >/dev/null || { echo "tls-scan: sslscan is not installed" >&2; exit 2; }
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# Waits until FILE has a line matching SED's capture, printing the capture.
wait_line() {
    local file=$1 expr=$2 got
    for _ in $(seq 1 300); do
        got=$(sed -n "$expr" "$file" 2>/dev/null | head -1)
        [ -n "$got" ] && { echo "$got"; return 0; }
        sleep 0.1
    done
    echo "tls-scan: no line in $file:" >&2
    cat "$file" >&2
    return 1
}

# The check, in two parts that each print why they fail and return 1: sslscan's enabled
# protocols are exactly TLSv1.3; every accepted suite (at least one) is a TLS 1.3 AEAD
# suite. Both must fail on the weak server, so neither can pass vacuously.
scan() { sslscan --no-colour "$1" 2>&1 || true; }
only_tls13() {
    local protocols
    protocols=$(grep -E '^(SSLv[23]|TLSv1\.[0-3]) +enabled' <<<"$1" | awk '{print $1}' | tr '\n' ' ')
    if [ "$protocols" != "TLSv1.3 " ]; then
        echo "  protocols enabled: ${protocols:-none} (want only TLSv1.3)"
        return 1
    fi
    echo "  protocols enabled: only TLSv1.3"
}
only_aead() {
    local ciphers bad
    ciphers=$(grep -E '^(Preferred|Accepted) ' <<<"$1" || true)
    if [ -z "$ciphers" ]; then
        echo "  no cipher suite accepted"
        return 1
    fi
    bad=$(grep -vE ' TLSv1\.3 .* (TLS_AES_128_GCM_SHA256|TLS_AES_256_GCM_SHA384|TLS_CHACHA20_POLY1305_SHA256|TLS_AES_128_CCM_SHA256) ' <<<"$ciphers" || true)
    if [ -n "$bad" ]; then
        echo "  suites that are not TLS 1.3 AEAD: $(awk '{print $2, $5}' <<<"$bad" | tr '\n' ' ')"
        return 1
    fi
    echo "  suites: $(awk '{print $5}' <<<"$ciphers" | tr '\n' ' ')"
}

# xferd on a fresh data directory, built-in defaults.
export XFERD_CONFIG=/dev/null
echo "scan-password-1" | "$bin/xferd" --data-dir "$tmp/data" user add alice --password-stdin --create >/dev/null
"$bin/xferd" --data-dir "$tmp/data" --listen 127.0.0.1:0 >"$tmp/xferd.out" 2>"$tmp/xferd.log" &
pids+=($!)
xferd_addr=$(wait_line "$tmp/xferd.out" 's/.* listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p')

# A deliberately weak server: TLS 1.2 only, one CBC suite (SHA-1 MAC); -www so that it
# serves connection after connection without reading stdin.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=weak \
    -keyout "$tmp/weak.key" -out "$tmp/weak.crt" 2>/dev/null
openssl s_server -www -accept 127.0.0.1:0 -tls1_2 -cipher 'AES128-SHA:@SECLEVEL=0' \
    -cert "$tmp/weak.crt" -key "$tmp/weak.key" >"$tmp/weak.out" 2>&1 </dev/null &
pids+=($!)
weak_addr=127.0.0.1:$(wait_line "$tmp/weak.out" 's/^ACCEPT .*:\([0-9]*\)$/\1/p')

status=0
echo "xferd ($xferd_addr):"
out=$(scan "$xferd_addr")
only_tls13 "$out" || status=1
only_aead "$out" || status=1
[ $status -eq 0 ] || echo "tls-scan: FAILED: xferd offers more than TLS 1.3 with AEAD suites"
echo "weak openssl s_server ($weak_addr), which both checks must refuse:"
out=$(scan "$weak_addr")
if only_tls13 "$out"; then
    echo "tls-scan: FAILED: the protocol check passed a TLS 1.2 server"
    status=1
fi
if only_aead "$out"; then
    echo "tls-scan: FAILED: the suite check passed a CBC suite"
    status=1
fi
[ $status -eq 0 ] && echo "tls-scan: ok"
exit $status
