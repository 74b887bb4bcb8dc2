#!/bin/sh
# Repair beside the tool people use for it today, in one run: our durability
# bench (benches/examples/durability.rs: 24 peers, 10+6, three rounds of
# MIB MiB published then two peers lost for good and repaired) and the same
# with Tahoe-LAFS 1.20 from PyPI (benches/tahoe_repair.py: 24 storage nodes,
# 10 of 16, `tahoe deep-check --repair`). Prints both sets of medians and
# their ratios.
#
#   benches/durability-vs-tahoe.sh [MIB]     (default 64)
#
# Tahoe-LAFS is installed into target/bench-tools/tahoe (a Python venv).
set -eu
# (pipefail is not POSIX: a failing tool is caught by its JSON line missing.)
MIB=${1:-64}
cd "$(dirname "$0")/.."
VENV=target/bench-tools/tahoe
if [ ! -x "$VENV/bin/tahoe" ]; then
    echo "installing tahoe-lafs 1.20.0 from PyPI into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q tahoe-lafs==1.20.0
fi
cargo build -q --release -p ionshard-benches --example durability

LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
echo "== ionshard ($MIB MiB per round)"
target/release/examples/durability "$MIB" | tee "$LOGS/ours"
echo "== Tahoe-LAFS ($MIB MiB per round)"
python3 benches/tahoe_repair.py "$VENV/bin/tahoe" "$MIB" | tee "$LOGS/theirs"
OURS=$(tail -n 1 "$LOGS/ours")
THEIRS=$(tail -n 1 "$LOGS/theirs")

python3 - "$OURS" "$THEIRS" <<'EOF'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rows = [
    ("repair, shard bytes rebuilt per second (MB/s)", "repair_mb_per_s", True),
    ("repair traffic per byte rebuilt (bytes)", "bytes_moved_per_byte_rebuilt", False),
    ("upload / publish (MB/s)", "upload_mb_per_s", True),
]
print(f"{'medians of 3 rounds':<48} {'ionshard':>10} {theirs['tool']:>18}  ratio")
for label, key, higher_better in rows:
    a, b = ours[key], theirs[key]
    note = "higher is better" if higher_better else "lower is better"
    print(f"{label:<48} {a:>10.1f} {b:>18.1f}  {a / b:.2f}x ({note})")
EOF
