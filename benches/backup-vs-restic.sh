#!/bin/sh
# ionshard backup beside restic on the same data, in the same run
# (benches/backup_bench.py says what is measured):
#   (a) a generated tree of MIB MiB in FILES files (benches/make_tree.py);
#   (b) the Rust toolchain's directory (`rustc --print sysroot`), read-only.
#
#   benches/backup-vs-restic.sh [MIB] [FILES] [ROUNDS] [PEERS] [CODING]
#                                (defaults: 1024 50000 3 20 10+10)
#
# restic comes from Debian's packages, installed if missing.
set -eu
MIB=${1:-1024}
FILES=${2:-50000}
ROUNDS=${3:-3}
PEERS=${4:-20}
CODING=${5:-10+10}
cd "$(dirname "$0")/.."
if ! command -v restic >/dev/null 2>&1; then
    echo "installing restic from Debian's packages" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q restic >/dev/null; else sudo apt-get install -y -q restic >/dev/null; fi
fi
cargo build -q --release -p ionshard
work="$PWD/target/bench-backup"
mkdir -p "$work"
data="$work/tree-$MIB-$FILES"
if [ ! -d "$data" ]; then
    rm -rf "$data.tmp"
    python3 benches/make_tree.py "$data.tmp" "$MIB" "$FILES"
    mv "$data.tmp" "$data"
fi
# Edits change the generated tree; a copy per run keeps the original.
rm -rf "$work/tree"
cp -a "$data" "$work/tree"
python3 benches/backup_bench.py --bin "$PWD/target/release/ionshard" --work "$work/run" \
    --rounds "$ROUNDS" --peers "$PEERS" --coding "$CODING" \
    --data "generated=$work/tree" --data "rust-sysroot=$(rustc --print sysroot):ro"
