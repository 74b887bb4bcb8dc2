#!/usr/bin/env python3
"""Tahoe-LAFS repair, measured the way benches/examples/durability.rs
measures ours: 24 storage nodes on 127.0.0.1, files encoded 10 of 16,
three rounds of (upload MIB MiB, two storage nodes holding shares leave for
good, `tahoe deep-check --repair` over every file so far). Per round it
prints the share bytes rebuilt per second of the repair, and the bytes the
repairing node moved (read plus written on its sockets, /proc/PID/io) per
byte rebuilt. The last line is one JSON object with the medians.

Usage: tahoe_repair.py TAHOE_EXECUTABLE MIB
Run by benches/durability-vs-tahoe.sh, which installs Tahoe-LAFS.
"""

import concurrent.futures
import configparser
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

NODES = 24
K, N = 10, 16
ROUNDS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, cond, secs):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.3)
    sys.exit(f"tahoe bench: {what} did not happen within {secs} s")


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def file_io(pids):
    """Bytes the processes read and wrote through read() and write()
    (/proc/PID/io rchar and wchar). Twisted's sockets use send() and recv(),
    which these do not count, so for the storage nodes this is their share
    files: what the repairer downloaded from them and uploaded to them."""
    read = written = 0
    for pid in pids:
        with open(f"/proc/{pid}/io") as f:
            io = dict(line.split(":") for line in f)
        read += int(io["rchar"])
        written += int(io["wchar"])
    return read, written


def foolscap_only(node_dir):
    """Tahoe 1.20 also speaks its HTTP storage protocol, whose clients
    (every node is one) open a fresh TLS connection to each server again
    and again: 25 nodes on one 2-core machine then keep both cores busy
    doing nothing, which would slow Tahoe's repair for a reason a real
    grid (one node per machine) does not have. Foolscap, Tahoe's
    long-standing protocol, holds its connections open."""
    cfg = configparser.ConfigParser()
    path = os.path.join(node_dir, "tahoe.cfg")
    cfg.read(path)
    for section in ("storage", "client"):
        if not cfg.has_section(section):
            cfg.add_section(section)
        cfg.set(section, "force_foolscap", "true")
    with open(path, "w") as f:
        cfg.write(f)


def main():
    tahoe, mib = sys.argv[1], int(sys.argv[2])
    base = tempfile.mkdtemp(prefix="tahoe-bench-")
    procs = {}
    logs = open(os.path.join(base, "nodes.log"), "w")

    def run(*args, check=True, capture=True):
        return subprocess.run([tahoe, *args], check=check, text=True, capture_output=capture)

    def start(name, d):
        # `tahoe run` exits when its stdin closes: give it a pipe kept open.
        procs[name] = subprocess.Popen([tahoe, "run", d], stdin=subprocess.PIPE, stdout=logs, stderr=logs)

    try:
        intro = os.path.join(base, "introducer")
        p = free_port()
        run("create-introducer", "--listen=tcp", f"--port=tcp:{p}:interface=127.0.0.1",
            f"--location=tcp:127.0.0.1:{p}", intro)
        start("introducer", intro)
        furl_file = os.path.join(intro, "private", "introducer.furl")
        furl = wait_for("the introducer writing its FURL",
                        lambda: os.path.exists(furl_file) and open(furl_file).read().strip(), 60)

        storage = {f"s{i}": os.path.join(base, f"s{i}") for i in range(NODES)}

        def create(name):
            p = free_port()
            run("create-node", "--listen=tcp", f"--port=tcp:{p}:interface=127.0.0.1",
                f"--location=tcp:127.0.0.1:{p}", "--webport=none", f"--introducer={furl}",
                f"--nickname={name}", storage[name])
            foolscap_only(storage[name])

        # Each `tahoe` command is a few CPU seconds of Python start-up.
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(create, storage))
        for name, d in storage.items():
            start(name, d)

        client = os.path.join(base, "client")
        web = free_port()
        run("create-client", f"--webport=tcp:{web}:interface=127.0.0.1", f"--introducer={furl}",
            f"--shares-needed={K}", f"--shares-happy={N}", f"--shares-total={N}", client)
        foolscap_only(client)
        start("client", client)

        def connected():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/?t=json", timeout=5) as r:
                    servers = json.load(r).get("servers", [])
            except Exception:
                return None
            return {s.get("nickname") for s in servers
                    if str(s.get("connection_status", "")).lower().startswith("connected")}

        wait_for(f"the client connecting to {NODES} storage nodes",
                 lambda: (c := connected()) is not None and len(c) >= NODES, 120)
        run("-d", client, "create-alias", "bench")

        speeds, per_byte, uploads = [], [], []
        for rnd in range(ROUNDS):
            f = os.path.join(base, "object")
            with open(f, "wb") as out:
                out.write(os.urandom(mib << 20))
            t0 = time.monotonic()
            run("-d", client, "put", f, f"bench:backup{rnd}")
            uploads.append((mib << 20) / (time.monotonic() - t0) / 1e6)
            os.remove(f)

            # Two storage nodes that hold shares leave for good.
            live = [n for n in storage if procs[n].poll() is None]
            holders = [n for n in live if du(os.path.join(storage[n], "storage", "shares")) > 0]
            for n in holders[:2]:
                procs[n].send_signal(signal.SIGKILL)
                procs[n].wait()
                shutil.rmtree(storage[n], ignore_errors=True)
            gone = set(holders[:2])
            wait_for("the client seeing the two nodes gone",
                     lambda: (c := connected()) is not None and not (c & gone), 60)
            remaining = [n for n in storage if n not in gone and procs[n].poll() is None]
            stored0 = sum(du(os.path.join(storage[n], "storage", "shares")) for n in remaining)
            pids = [procs[n].pid for n in remaining]
            io0 = file_io(pids)
            t0 = time.monotonic()
            out = run("-d", client, "deep-check", "--repair", "bench:").stdout
            secs = time.monotonic() - t0
            io1 = file_io(pids)
            # Rebuilt: the share bytes written to the storage nodes (the
            # growth of their share directories, which the repair's new
            # shares should match, is printed beside it as a check).
            read, rebuilt = io1[0] - io0[0], io1[1] - io0[1]
            moved = read + rebuilt
            grown = sum(du(os.path.join(storage[n], "storage", "shares")) for n in remaining) - stored0
            if rebuilt <= 0:
                sys.exit(f"tahoe bench: deep-check --repair rebuilt nothing:\n{out}")
            print(f"tahoe repair round {rnd}: {rebuilt / 1e6:.1f} MB rebuilt (share directories grew "
                  f"{grown / 1e6:.1f} MB) in {secs:.2f} s "
                  f"({rebuilt / secs / 1e6:.1f} MB/s), {moved / rebuilt:.1f} bytes moved per byte rebuilt; "
                  f"upload {uploads[-1]:.1f} MB/s", flush=True)
            speeds.append(rebuilt / secs / 1e6)
            per_byte.append(moved / rebuilt)
        print(json.dumps({
            "tool": run("--version").stdout.strip(),
            "repair_mb_per_s": statistics.median(speeds),
            "bytes_moved_per_byte_rebuilt": statistics.median(per_byte),
            "upload_mb_per_s": statistics.median(uploads),
        }))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
