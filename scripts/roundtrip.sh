#!/usr/bin/env bash
# The main job on the local default, by hand: chunk a sample firmware image
# into shard files, lose shards, restore it byte-exact, then publish v2 next
# to v1 and restore it with v1 as the seed (delta).
# Usage: scripts/roundtrip.sh [FILE]   (default testdata/firmware-v1.img)
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-testdata/firmware-v1.img}
cargo build --release -q -p ionshard
bin=target/release/ionshard
work=$(mktemp -d "${TMPDIR:-/tmp}/ionshard-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
export IONSHARD_HOME="$work/home"

echo "== chunk $file (10 data + 4 parity shards per segment)"
cap=$("$bin" chunk "$file" --out "$work/shards")
echo "$cap"
echo "== lose 4 shards of the first segment (any 4 of 14 may go)"
"$bin" chunk "$file" --out "$work/shards" --json >"$work/chunk.json"
cap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["capability"])' "$work/chunk.json")
python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
c = json.load(open(f"{work}/chunk.json"))
for cid in c["segments"][0]["shards"][:4]:
    os.remove(f"{work}/shards/{cid}")
    print("removed", cid)
PY
echo "== unchunk"
"$bin" unchunk "$cap" --shards "$work/shards" --out "$work/restored"
cmp "$file" "$work/restored" && echo "byte-exact"
if [ "$file" = testdata/firmware-v1.img ]; then
  echo "== v2 next to v1: store only new chunks, restore with v1 as the seed"
  cap2=$("$bin" chunk testdata/firmware-v2.img --out "$work/shards" --known "$cap")
  "$bin" unchunk "$cap2" --shards "$work/shards" --out "$work/v2" --seed "$file"
  cmp testdata/firmware-v2.img "$work/v2" && echo "byte-exact"
fi
