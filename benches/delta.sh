#!/bin/sh
# What a device downloads for a patch release (issue 17's baseline), beside
# `zstd --patch-from` of the whole image: real releases from PyPI (Django
# 5.1.3 -> 5.1.4 and SQLAlchemy 2.0.35 -> 2.0.36, sdists extracted and
# re-tarred with sorted names and zeroed times and owners, as a
# reproducible image build would), published to a local sandbox (8 peers,
# 6+2) and updated by a device seeded with the old image. Prints a
# Markdown table: the bundle (with its manifest), the ranges, the
# placements, the total; zstd's patch; the ratio.
#
#   benches/delta.sh            (needs the network for PyPI; zstd is
#                                installed from Debian's packages if missing)
set -eu
cd "$(dirname "$0")/.."
if ! command -v zstd >/dev/null 2>&1; then
    echo "installing zstd from Debian's packages" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q zstd >/dev/null; else sudo apt-get install -y -q zstd >/dev/null; fi
fi
cargo build -q --release -p ionshard
BIN=$PWD/target/release/ionshard
W=$(mktemp -d "${TMPDIR:-/tmp}/ionshard-delta.XXXXXX")
trap '"$BIN" sandbox down --dir "$W/sb" >/dev/null 2>&1 || true; rm -rf "$W"' EXIT INT TERM

# sdist NAME VERSION: $W/NAME-VERSION.tar, reproducible.
sdist() {
    lower=$(echo "$1" | tr 'A-Z' 'a-z')
    url=$(curl -fsSL "https://pypi.org/simple/$lower/" | grep -io "href=\"[^\"]*/$1-$2\.tar\.gz[^\"]*\"" | head -n 1 \
        | sed -e 's/^href="//' -e 's/[#"].*//')
    [ -n "$url" ] || { echo "no sdist of $1 $2 on PyPI's simple index" >&2; exit 1; }
    curl -fsSL "$url" -o "$W/$1-$2.tar.gz"
    mkdir -p "$W/x/$1-$2"
    tar -xzf "$W/$1-$2.tar.gz" -C "$W/x/$1-$2" --strip-components=1
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -cf "$W/$1-$2.tar" -C "$W/x/$1-$2" .
}

eval "$("$BIN" sandbox up --peers 8 --producers 0 --dir "$W/sb")"
"$BIN" vendor init --name bench --dir "$W/v" >/dev/null
"$BIN" vendor register --dir "$W/v" >/dev/null

echo "| release | image | bundle (manifest) | ranges | placements | ionshard in all | zstd --patch-from | ionshard / zstd |"
echo "|---|---|---|---|---|---|---|---|"
# row NAME PRODUCT OLD NEW
row() {
    sdist "$1" "$3"
    sdist "$1" "$4"
    old=$W/$1-$3.tar
    new=$W/$1-$4.tar
    for v in "$3" "$4"; do
        "$BIN" publish "$W/$1-$v.tar" --product "$2" --version "$v" --hardware bench --vendor-dir "$W/v" \
            --data-shards 6 --parity-shards 2 --json >/dev/null
    done
    st=$W/device-$2
    "$BIN" update --release "$2@$3" --root "$W/v/root.json" --product "$2" --hardware bench --state "$st" \
        --json >/dev/null
    "$BIN" update --release "$2@$4" --root "$W/v/root.json" --product "$2" --hardware bench --state "$st" \
        --seed "$old" --json >"$W/u.json"
    zstd -q -f -19 --long=27 --patch-from="$old" "$new" -o "$W/p.zst" 2>/dev/null
    python3 - "$W/u.json" "$W/p.zst" "$1 $3 -> $4" <<'PY'
import json, os, sys
u = json.load(open(sys.argv[1]))
d = u["downloads"]
z = os.path.getsize(sys.argv[2])
print(f"| {sys.argv[3]} | {u['image_bytes']:,} | {d['bundle_bytes']:,} ({d['manifest_bytes']:,}) | "
      f"{d['range_bytes']:,} | {d['placement_bytes']:,} | {d['total_bytes']:,} | {z:,} | {d['total_bytes'] / z:.0f}x |")
PY
}
row Django django 5.1.3 5.1.4
row SQLAlchemy sqlalchemy 2.0.35 2.0.36
