#!/usr/bin/env bash
# Builds the Debian package target/debian/xferd_VERSION-REV_ARCH.deb (both binaries, the
# unit, /etc/xferd/xferd.toml, the xferd user and /var/lib/xferd, man pages, completions).
# Man pages and completions come from the freshly built binaries (`man DIR`,
# `completions SHELL`), so they always match the command lines they describe.
# Arguments go to `cargo deb` (e.g. `--fast`; `--dbgsym` adds an xferd-dbgsym .ddeb with
# the debug symbols stripped from the binaries). Needs cargo-deb:
# `cargo install --locked cargo-deb`. Prints the .deb's path last.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null; then
    echo "build-deb.sh: cargo-deb is missing; install it with: cargo install --locked cargo-deb" >&2
    exit 1
fi

cargo build --release --locked -p xferd -p xfer
bin="${CARGO_TARGET_DIR:-target}/release"

# daemon/Cargo.toml's assets read these paths.
out="$bin/packaging"
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
for cmd in xfer xferd; do
    "$bin/$cmd" man "$out/man" >/dev/null
    "$bin/$cmd" completions bash >"$out/completions/$cmd.bash"
    "$bin/$cmd" completions zsh >"$out/completions/_$cmd"
    "$bin/$cmd" completions fish >"$out/completions/$cmd.fish"
done
# Debian policy: man pages gzipped, reproducibly (-n: no name or time stamp).
gzip -9n "$out"/man/*.1

# --strip: the release profile keeps line tables, which would make the package 5x larger.
cargo deb -p xferd --no-build --locked --strip "$@"
