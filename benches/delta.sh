#!/bin/sh
# What a device downloads for a patch release (issue 17's baseline), beside
# `zstd --patch-from` of the whole image: real releases from PyPI (Django
# 5.1.3 -> 5.1.4 and SQLAlchemy 2.0.35 -> 2.0.36, sdists extracted and
# re-tarred with sorted names and zeroed times and owners, as a
# reproducible image build would), published to a local sandbox (8 peers,
# 6+2) twice, as two products: with patches, and with --no-patches; a
# device with the old release installed updates to the new one. Prints
# Markdown tables: the publish times, the bytes downloaded by what they
# were, with and without patches, beside zstd's patch; then the bytes for
# devices whose seed is not the previous release (two versions back,
# damaged, none), each image checked byte for byte. libp2p's own bytes
# (DHT lookups, identify, negotiation, framing: what its streams carried
# besides the ranges; Noise's handshake and Yamux's headers are below the
# streams and not counted) are shown apart.
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

# publish PRODUCT VERSION FILE [FLAGS]: prints the publish's JSON.
publish() {
    p=$1; v=$2; f=$3; shift 3
    "$BIN" publish "$f" --product "$p" --version "$v" --hardware bench --vendor-dir "$W/v" \
        --data-shards 6 --parity-shards 2 --json "$@"
}
# update STATE PRODUCT VERSION [FLAGS]: the update's JSON in $W/u.json; checks the image.
update() {
    st=$1; p=$2; v=$3; shift 3
    "$BIN" update --release "$p@$v" --root "$W/v/root.json" --product "$p" --hardware bench --state "$st" \
        --json "$@" >"$W/u.json"
}
echo "| release | image | publish with / without patches | bundle (manifest) | ranges | with patches in all | without | zstd --patch-from | fewer bytes than without | ionshard / zstd | libp2p besides ranges (in / out) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
# row NAME PRODUCT OLD NEW
row() {
    sdist "$1" "$3"
    sdist "$1" "$4"
    old=$W/$1-$3.tar
    new=$W/$1-$4.tar
    # The same two releases as two products: one with patches, one without.
    publish "$2" "$3" "$old" >/dev/null
    publish "$2-whole" "$3" "$old" >/dev/null
    t0=$(date +%s.%N)
    publish "$2" "$4" "$new" >"$W/p.json"
    t1=$(date +%s.%N)
    publish "$2-whole" "$4" "$new" --no-patches >/dev/null
    t2=$(date +%s.%N)
    for p in "$2" "$2-whole"; do
        update "$W/device-$p" "$p" "$3"
        cmp -s "$W/device-$p/images/$p-$3.img" "$old" || { echo "$p $3: the image differs" >&2; exit 1; }
        update "$W/device-$p" "$p" "$4"
        cmp -s "$W/device-$p/images/$p-$4.img" "$new" || { echo "$p $4: the image differs" >&2; exit 1; }
        cp "$W/u.json" "$W/u-$p.json"
    done
    zstd -q -f -19 --long=27 --patch-from="$old" "$new" -o "$W/p.zst" 2>/dev/null
    python3 - "$W/u-$2.json" "$W/u-$2-whole.json" "$W/p.zst" "$1 $3 -> $4" "$t0" "$t1" "$t2" <<'PY'
import json, os, sys
u, w = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
d, dw = u["downloads"], w["downloads"]
z = os.path.getsize(sys.argv[3])
t0, t1, t2 = (float(x) for x in sys.argv[5:8])
m = f"{d['manifest_bytes']:,}" + (" delta" if d["manifest_delta"] else "")
print(f"| {sys.argv[4]} | {u['image_bytes']:,} | {t1 - t0:.2f} s / {t2 - t1:.2f} s | {d['bundle_bytes']:,} ({m}) | "
      f"{d['range_bytes']:,} | {d['total_bytes']:,} | {dw['total_bytes']:,} | {z:,} | "
      f"{dw['total_bytes'] / d['total_bytes']:.1f}x | {d['total_bytes'] / z:.1f}x | "
      f"{d['p2p_overhead_bytes']:,} / {d['p2p_out_bytes']:,} |")
PY
}
row Django django 5.1.3 5.1.4
row SQLAlchemy sqlalchemy 2.0.35 2.0.36

# Devices whose seed is not the previous release: two versions back (5.1.2
# -> 5.1.4, the patches being against 5.1.3), a damaged seed, no seed.
echo
echo "| Django 5.1.4 from | in all | bundle | manifest | ranges | chunks from patches | patches refused |"
echo "|---|---|---|---|---|---|---|"
sdist Django 5.1.2
publish django-3 5.1.2 "$W/Django-5.1.2.tar" >/dev/null
publish django-3 5.1.3 "$W/Django-5.1.3.tar" >/dev/null
publish django-3 5.1.4 "$W/Django-5.1.4.tar" >/dev/null
# case_row LABEL: a row from $W/u.json, the image checked against 5.1.4.
case_row() {
    cmp -s "$W/u-image" "$W/Django-5.1.4.tar" || { echo "$1: the image differs" >&2; exit 1; }
    python3 - "$W/u.json" "$1" <<'PY'
import json, sys
u = json.load(open(sys.argv[1]))
d = u["downloads"]
m = f"{d['manifest_bytes']:,}" + (" delta" if d["manifest_delta"] else "")
print(f"| {sys.argv[2]} | {d['total_bytes']:,} | {d['bundle_bytes']:,} | {m} | {d['range_bytes']:,} | "
      f"{u['patched_chunks']} | {len(u['patch_fallbacks'])} |")
PY
}
update "$W/two-back" django-3 5.1.2
update "$W/two-back" django-3 5.1.4
cp "$W/two-back/images/django-3-5.1.4.img" "$W/u-image"
case_row "5.1.2 installed (two versions back)"
update "$W/prev" django-3 5.1.3
python3 - "$W/prev/images/django-3-5.1.3.img" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
for i in range(0, len(b), 64 << 10):
    b[i + 100 if i + 100 < len(b) else i] ^= 0xFF
open(p, "wb").write(b)
PY
update "$W/prev" django-3 5.1.4
cp "$W/prev/images/django-3-5.1.4.img" "$W/u-image"
case_row "5.1.3 installed, one byte in every 64 KiB of it damaged"
update "$W/none" django-3 5.1.4 --no-seed
cp "$W/none/images/django-3-5.1.4.img" "$W/u-image"
case_row "nothing installed (no seed)"
