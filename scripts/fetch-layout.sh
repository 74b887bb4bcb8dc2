#!/usr/bin/env bash
# Regenerates cli/layout/fetch.ld: the functions a device runs to fetch and
# install a release, which the linker lays out together in optimised builds
# (cli/build.rs says why: the fetcher's RSS).
#
# Usage: scripts/fetch-layout.sh [PROFILE]   (about 5 minutes; installs valgrind if missing)
#   release (the default) writes cli/layout/fetch.ld, which every profile
#   falls back to; another profile (device) writes cli/layout/fetch-PROFILE.ld,
#   since its symbols carry other hashes.
#
# It builds the binary of that profile, starts a sandbox network, publishes two
# versions of a 32 MiB image and runs, under valgrind's callgrind, what a
# device runs: `fetch` of the first and `update` to each (the second as a
# delta against the first). Every function callgrind saw run that the binary
# defines goes into the file. Names carry a hash of their crate's build
# settings; where the hash-free name matches no more than half again as much
# code, the hash is left out (`17h*E`) so the line outlives the next version
# bump; generic instances keep it. Rerun after a toolchain or dependency
# change, or a version bump: `benches/speed.sh` prints how much of the file
# the build still matched.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
fi
build=${1:-release}
out=cli/layout/fetch.ld
[ "$build" = release ] || out=cli/layout/fetch-$build.ld
cargo build --profile "$build" -q -p ionshard
bin=$PWD/target/$build/ionshard
work=$(mktemp -d "${TMPDIR:-/tmp}/ionshard-layout.XXXXXX")
cleanup() {
    "$bin" sandbox down --dir "$work/sb" >/dev/null 2>&1 || true
    rm -rf "$work" "$out.tmp"
}
trap cleanup EXIT

echo "starting a sandbox of 14 peers in $work/sb" >&2
eval "$("$bin" sandbox up --peers 14 --producers 0 --dir "$work/sb")"
"$bin" vendor init --name layout --dir "$work/vendor" >/dev/null 2>&1
"$bin" vendor register --dir "$work/vendor" >/dev/null
head -c 32M /dev/urandom >"$work/v1.img"
cp "$work/v1.img" "$work/v2.img"
# A patch release: 64 KiB rewritten in three places.
for at in 1 13 29; do
    head -c 64K /dev/urandom | dd of="$work/v2.img" bs=1M seek="$at" conv=notrunc status=none
done
for v in 1 2; do
    "$bin" publish "$work/v$v.img" --product box --version "1.0.$v" --hardware h1 --vendor-dir "$work/vendor" \
        --data-shards 10 --parity-shards 4 --json >/dev/null
done

profile() { # NAME ARGS...: run the binary under callgrind
    local name=$1
    shift
    echo "profiling: ionshard $*" >&2
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$name.cg" "$bin" "$@" \
        >"$work/$name.out" 2>"$work/$name.err" || { tail -20 "$work/$name.err" >&2; exit 1; }
}
dev=(--root "$work/vendor/root.json" --product box --hardware h1 --state "$work/device")
profile fetch fetch --bundle "$work/vendor/releases/box@1.0.1.bundle.json" "${dev[@]}" --out "$work/out.img" --json
rm -rf "$work/device"
profile update1 update --release box@1.0.1 "${dev[@]}" --json
profile update2 update --release box@latest "${dev[@]}" --json

nm -S --defined-only "$bin" >"$work/nm.txt"
python3 - "$work" "$(rustc --version), profile $build" >"$out.tmp" <<'EOF'
import collections, glob, re, sys
work, rustc = sys.argv[1], sys.argv[2]
size = {}
for line in open(f"{work}/nm.txt"):
    p = line.split()
    if len(p) == 4 and p[2] in "tTwW":
        size[p[3]] = int(p[1], 16)
seen = set()
for cg in glob.glob(f"{work}/*.cg"):
    for line in open(cg, errors="replace"):
        m = re.match(r"^c?fn=\(\d+\) (.*)$", line.rstrip("\n"))
        if m:
            seen.add(re.sub(r"'\d+$", "", m.group(1)))
# Only names the linker script's lexer reads as one token (Rust's mangled
# names always are); cli/tests/cli.rs checks the file for the same.
hot = sorted(n for n in seen if n in size and re.fullmatch(r"[A-Za-z0-9_$.]+", n))

def loose(name):
    """The name without the hashes that change with build settings."""
    p = re.sub(r"17h[0-9a-f]{16}E", "17h*E", name)
    p = re.sub(r"\.llvm\.\d+", ".llvm.*", p)
    if p.startswith("_R"):
        p = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", p)
    return p

everyone = collections.defaultdict(int)
for n, s in size.items():
    everyone[loose(n)] += s
ours = collections.defaultdict(list)
for n in hot:
    ours[loose(n)].append(n)
lines = []
for pattern, names in ours.items():
    if everyone[pattern] <= 1.5 * sum(size[n] for n in names):
        lines.append(pattern)
    else:
        lines.extend(re.sub(r"\.llvm\.\d+", ".llvm.*", n) for n in names)
total = sum(size[n] for n in hot)
print("/* The functions a device runs to fetch and install a release, laid out")
print("   together (cli/build.rs). Made by scripts/fetch-layout.sh; do not edit.")
print(f"   {len(hot)} functions, {total / 2**20:.2f} MiB of code; {rustc}. */")
print("SECTIONS {\n  .text.hot : {")
# Cold functions (`#[cold]`, most of them growth paths) are in sections of
# their own prefix.
for line in sorted(set(lines)):
    print(f"    *(.text.{line} .text.unlikely.{line})")
print("  }\n} INSERT BEFORE .text;")
print(f"{len(hot)} functions, {total / 2**20:.2f} MiB, {len(set(lines))} lines", file=sys.stderr)
EOF
mv "$out.tmp" "$out"
echo "wrote $out" >&2
