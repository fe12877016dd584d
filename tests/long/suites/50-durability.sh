#!/usr/bin/env bash
# Durability order (docs/TESTING.md): runs xferd under strace, pushes a file slowly
# enough for several state checkpoints, and checks from the trace what reaches the disk
# in which order:
#   commit:      last data write -> fsync(data) -> rename(data -> home) -> fsync(home dir)
#                -> unlink(state), the state removed last;
#   checkpoints: written to <key>.meta.tmp, then renamed over <key>.meta (never in place);
#   manifest:    written to a temporary, renamed into place before the commit's rename.
# Exits non-zero when an order is wrong, or when a checkpoint or manifest is renamed
# into place without an fsync of its temporary (after a power cut that would cost
# progress, never correctness).
# Needs strace and python3. Binaries: $XFER_BIN_DIR (tests/long/run.sh sets it) or target/debug.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
bin=${XFER_BIN_DIR:-$root/target/debug}
[ -x "$bin/xferd" ] || (cd "$root" && cargo build --quiet --bins -p xferd -p xfer)
command -v strace >/dev/null || { apt-get update -qq && apt-get install -y -qq strace; }

work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export XFERD_CONFIG=/dev/null XFER_HOME="$work/home"
pw="correct horse battery"
echo "$pw" | "$bin/xferd" --data-dir "$work/data" user add alice --password-stdin --create >/dev/null
size_mib=${XFER_DURABILITY_MIB:-48}
head -c "$((size_mib << 20))" /dev/urandom >"$work/src.bin"

strace -f -y -qq -o "$work/trace" \
    -e trace=fsync,fdatasync,rename,renameat,renameat2,openat,unlinkat,unlink,write,pwrite64 \
    "$bin/xferd" --data-dir "$work/data" --listen 127.0.0.1:0 >"$work/out" 2>"$work/log" &
for _ in $(seq 100); do grep -q fingerprint "$work/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/.* listening on //p' "$work/out")
fp=$(sed -n 's/^certificate fingerprint //p' "$work/out")
pid=$(cat "/proc/$!/task/$!/children" | awk '{print $1}')
echo "$pw" | "$bin/xfer" login "alice@$addr" --password-stdin --fingerprint "$fp" >/dev/null
# 20 MB/s: a checkpoint about every second (upload.rs saves every 16 chunks, 250 ms apart
# at least, and at least once a second).
"$bin/xfer" push -q --limit-rate 20M "$work/src.bin"
cmp "$work/src.bin" "$work/data/users/alice/files/src.bin"
kill -TERM "$pid"
wait || true
pid=

python3 - "$work/trace" <<'EOF'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
call = re.compile(r'^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)')
fdpath = lambda s: (re.match(r'\s*-?\d+<([^>]*)>', s) or [None, ''])[1]
# With -f a call another thread interrupts is split ("<unfinished ...>", then
# "<... NAME resumed>"); it is counted where it returns.
unfinished = re.compile(r'^(\d+)\s+(\w+)\((.*) <unfinished \.\.\.>$')
resumed = re.compile(r'^(\d+)\s+<\.\.\. (\w+) resumed>(.*)\)\s+=\s+(-?\d+)')
events, pending = [], {}
for n, l in enumerate(lines):
    if m := unfinished.match(l):
        pending[m.group(1)] = m.group(3)
    elif m := resumed.match(l):
        if int(m.group(4)) >= 0:
            events.append((n, m.group(2), pending.pop(m.group(1), '') + m.group(3)))
    elif (m := call.match(l)) and int(m.group(4)) >= 0:
        events.append((n, m.group(2), m.group(3)))
def args(a):
    # fd<path>, "name", fd<path>, "name" for renameat*
    return re.findall(r'(-?\d+<[^>]*>|AT_FDCWD<[^>]*>|"[^"]*")', a)
failed = []
def bad(msg):
    failed.append(msg); print("FAIL", msg)
renames = [(n, a) for n, s, a in events if s.startswith('rename')]
def rename_parts(a):
    p = args(a)
    strip = lambda x: x.strip('"')
    if len(p) == 2:  # rename(old, new)
        return strip(p[0]), strip(p[1])
    if len(p) < 4:
        return '', ''
    join = lambda d, name: name if name.startswith('/') else fdpath(d.replace('AT_FDCWD', '0')) + '/' + name
    return join(p[0], strip(p[1])), join(p[2], strip(p[3]))
commit = [(n, *rename_parts(a)) for n, a in renames if rename_parts(a)[0].endswith('.part')]
if len(commit) != 1:
    bad(f"expected one commit rename, saw {len(commit)}")
    sys.exit(1)
cn, part, dest = commit[0]
home = dest.rsplit('/', 1)[0]
key = part.rsplit('/', 1)[1][:-len('.part')]
writes = [n for n, s, a in events if s in ('pwrite64', 'write') and fdpath(a) == part]
fsync_part = [n for n, s, a in events if s in ('fsync', 'fdatasync') and fdpath(a) == part]
fsync_home = [n for n, s, a in events if s in ('fsync', 'fdatasync') and fdpath(a) == home]
unlink_meta = [n for n, s, a in events if s.startswith('unlink') and f'{key}.meta"' in a]
print(f"data writes: {len(writes)}, commit rename at trace line {cn + 1}")
before = [f for f in fsync_part if f < cn]
if not writes or not before or max(writes) > max(before):
    bad("no fsync of the data between its last write and the commit's rename")
else:
    print("ok   fsync(data) after the last write, before rename(data -> home)")
after = [f for f in fsync_home if f > cn]
if not after:
    bad("no fsync of the home directory after the commit's rename")
else:
    print("ok   rename(data -> home) then fsync(home dir)")
if not unlink_meta or min(unlink_meta) < cn or (after and min(unlink_meta) < min(after)):
    bad("the state was not removed last (after the rename and the directory's fsync)")
else:
    print("ok   state removed after fsync(home dir)")
# Checkpoints and the manifest: temporary, then rename; fsync of the temporary?
for label, final in (("state checkpoint", f"/partials/{key}.meta"), ("manifest", ".json")):
    rs = [(n, *rename_parts(a)) for n, a in renames
          if rename_parts(a)[1].endswith(final) and (label != "manifest" or "/manifests/" in rename_parts(a)[1])]
    if not rs:
        bad(f"no {label} renamed into place"); continue
    synced = 0
    for n, src, dst in rs:
        if not src.endswith('.tmp'):
            bad(f"{label} {dst} renamed from {src}, not a temporary")
        w = [m for m, s, a in events if s == 'write' and fdpath(a) == src and m < n]
        if not w:
            bad(f"{label} renamed with no write to {src} before it")
            continue
        if any(s in ('fsync', 'fdatasync') and fdpath(a) == src and max(w) < m < n for m, s, a in events):
            synced += 1
    direct = [n for n, s, a in events if s == 'write' and fdpath(a).endswith(final) and not fdpath(a).endswith('.tmp')]
    if direct:
        bad(f"{label} written in place ({len(direct)} writes)")
    print(f"ok   {label}: {len(rs)} written to a temporary and renamed into place")
    if synced < len(rs):
        bad(f"{label}: {len(rs) - synced} of {len(rs)} renamed without an fsync of the temporary")
    else:
        print(f"ok   {label}: every temporary fsynced before its rename")
    if label == "manifest" and min(n for n, *_ in rs) > cn:
        bad("manifest stored after the commit's rename")
sys.exit(1 if failed else 0)
EOF
echo "durability order: ok (${size_mib} MiB push)"
