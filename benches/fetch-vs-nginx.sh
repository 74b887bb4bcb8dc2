#!/bin/sh
# A device fetch beside a plain download from a central server, in one run:
# benches/examples/ota.rs publishes MIB MiB with 10+4 on 14 peers, then
# fetches it three times to this disk (synced) and three times to tmpfs,
# each run beside nginx + curl of the same file to the same place, and
# prints the medians, their ratio and the fetcher's core-seconds per GB.
#
#   benches/fetch-vs-nginx.sh [MIB]     (default 256)
#
# nginx comes from Debian's packages (nginx-light), installed if missing.
set -eu
MIB=${1:-256}
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "installing nginx-light from Debian's packages" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q nginx-light >/dev/null; else sudo apt-get install -y -q nginx-light >/dev/null; fi
fi
cargo build -q --release -p ionshard
cargo build -q --release -p ionshard-benches --example ota
target/release/examples/ota "$MIB"
