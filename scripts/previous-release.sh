#!/usr/bin/env bash
# Build the previous release's `ionshard` (the commit in
# testdata/compat/PREVIOUS: the release before timestamps) into
# target/prev/release/ionshard, for cli/tests/compat.rs, and print its path.
# Takes about as long as a first release build (7 minutes on 2 cores); a
# second run finds it built.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$(cat testdata/compat/PREVIOUS)
out="${CARGO_TARGET_DIR:-$PWD/target}/prev"
if [ -x "$out/release/ionshard" ] && [ "$(cat "$out/REV" 2>/dev/null)" = "$rev" ]; then
    echo "$out/release/ionshard"
    exit 0
fi
if ! git cat-file -e "$rev^{commit}" 2>/dev/null; then
    git fetch --quiet origin "$rev" 2>/dev/null || {
        echo "commit $rev (the previous release) is not in this clone's history; fetch it (git fetch --unshallow)" >&2
        exit 1
    }
fi
rm -rf "$out/src"
mkdir -p "$out/src"
git archive "$rev" | tar -x -C "$out/src"
cargo build --release --locked -p ionshard --manifest-path "$out/src/Cargo.toml" --target-dir "$out" >&2
echo "$rev" > "$out/REV"
echo "$out/release/ionshard"
