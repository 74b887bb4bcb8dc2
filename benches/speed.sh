#!/bin/sh
# The whole path, old build beside new, in one run (benches/examples/speed.rs):
# a bootstrap, 16 peers and an SPN as processes on loopback; publish with
# 10+4 and 10+6; `ionshard fetch` to this disk (synced) and to tmpfs, each
# beside nginx + curl of the same image. Per side CPU per GB.
#
#   benches/speed.sh [MIB] [BASE_REV]     (defaults: 256, and the commit
#                                          issue 12's work started from)
#   IONSHARD_PROFILE=device benches/speed.sh   (this side built as a device's
#                                          binary is: --profile device)
#
# nginx comes from Debian's packages (nginx-light), installed if missing.
# The base build goes to target/bench-base (a first build takes minutes).
set -eu
MIB=${1:-256}
BASE_REV=${2:-431ae04}
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "installing nginx-light from Debian's packages" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q nginx-light >/dev/null; else sudo apt-get install -y -q nginx-light >/dev/null; fi
fi
base="$PWD/target/bench-base"
if [ "$(cat "$base/REV" 2>/dev/null)" != "$BASE_REV" ]; then
    rm -rf "$base/src"
    mkdir -p "$base/src"
    git archive "$BASE_REV" | tar -x -C "$base/src"
    cargo build -q --release --locked -p ionshard --manifest-path "$base/src/Cargo.toml" --target-dir "$base" >&2
    echo "$BASE_REV" > "$base/REV"
fi
# IONSHARD_PROFILE=device measures the build a device runs (Cargo.toml).
PROFILE=${IONSHARD_PROFILE:-release}
cargo build -q --profile "$PROFILE" -p ionshard
cargo build -q --release -p ionshard-benches --example speed
# The fetch path's code layout (cli/build.rs): how much of what
# cli/layout/fetch.ld lists this build placed. Far less means the file is
# stale (a version bump, a toolchain or dependency change): rerun
# scripts/fetch-layout.sh [PROFILE].
placed=$(readelf -SW "target/$PROFILE/ionshard" | awk '{for (i = 1; i <= NF; i++) if ($i == ".text.hot") print $(i + 4)}')
layout=cli/layout/fetch-$PROFILE.ld
[ -f "$layout" ] || layout=cli/layout/fetch.ld
listed=$(sed -n 's/.* \([0-9.]*\) MiB of code.*/\1/p' "$layout")
python3 -c 'import sys; p = int(sys.argv[1] or "0", 16) / 2**20; print(f"code layout: {p:.2f} MiB placed together of the {sys.argv[2]} MiB {sys.argv[3]} lists")' "$placed" "$listed" "$layout"
IONSHARD_BIN="target/$PROFILE/ionshard" target/release/examples/speed --mib "$MIB" --base "$base/release/ionshard"
