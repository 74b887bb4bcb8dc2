#!/bin/sh
# The personal drive beside `rclone serve webdav` of a plain directory, in
# the same run (benches/drive_bench.py says what is measured): upload and
# download MB/s through WebDAV (rclone as the client for both servers) and
# through ionshard's CLI, for one file of BIG_MIB MiB and SMALL files of
# 4 KiB; medians of ROUNDS.
#
#   benches/drive-vs-rclone.sh [BIG_MIB] [SMALL] [ROUNDS] [DEVICES]
#                              (defaults: 1024 10000 3 3)
#
# rclone comes from Debian's packages, installed if missing.
set -eu
BIG=${1:-1024}
SMALL=${2:-10000}
ROUNDS=${3:-3}
DEVICES=${4:-3}
cd "$(dirname "$0")/.."
if ! command -v rclone >/dev/null 2>&1; then
    echo "installing rclone from Debian's packages" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q rclone >/dev/null; else sudo apt-get install -y -q rclone >/dev/null; fi
fi
cargo build -q --release -p ionshard
python3 benches/drive_bench.py --bin "$PWD/target/release/ionshard" --work "$PWD/target/bench-drive" \
    --big-mib "$BIG" --small "$SMALL" --rounds "$ROUNDS" --devices "$DEVICES"
