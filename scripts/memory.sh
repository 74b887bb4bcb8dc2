#!/usr/bin/env bash
# Peak RSS of chunking and unchunking a generated stream (default 4 GiB).
# Usage: scripts/memory.sh [SIZE]   e.g. scripts/memory.sh 4GiB
# Needs about 2.5 x SIZE of free disk under ${TMPDIR:-/tmp}.
set -euo pipefail
size=${1:-4GiB}
cd "$(dirname "$0")/.."
cargo build --release -q -p ionshard -p ionshard-benches --example stream
bin=target/release/ionshard
stream=target/release/examples/stream
work=$(mktemp -d "${TMPDIR:-/tmp}/ionshard-mem.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$stream" "$size" 2>"$work/want.b3" \
  | /usr/bin/time -v "$bin" chunk - --out "$work/shards" --secret "$work/secret" --json \
    >"$work/chunk.json" 2>"$work/chunk.time"
cap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["capability"])' "$work/chunk.json")
/usr/bin/time -v "$bin" unchunk "$cap" --shards "$work/shards" --out "$work/restored" --json \
  >"$work/unchunk.json" 2>"$work/unchunk.time"
got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["blake3"])' "$work/unchunk.json")
want=$(cat "$work/want.b3")
[ "$got" = "$want" ] || { echo "restored stream differs: $got != $want"; exit 1; }
rss() { awk -F': ' '/Maximum resident set size/ {printf "%.1f MiB", $2/1024}' "$1"; }
mbps() { python3 -c 'import json,sys; print("%.0f MB/s" % json.load(open(sys.argv[1]))["mb_per_s"])' "$1"; }
echo "stream of $size, verified (BLAKE3 $want)"
echo "chunk:   peak RSS $(rss "$work/chunk.time"), $(mbps "$work/chunk.json") (writing shards to disk)"
echo "unchunk: peak RSS $(rss "$work/unchunk.time"), $(mbps "$work/unchunk.json") (reading shards from disk)"
