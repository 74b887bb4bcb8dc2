#!/usr/bin/env python3
"""The personal drive beside `rclone serve webdav` of a plain directory, in
the same run, on the same machine (benches/drive-vs-rclone.sh runs it).

Network: `ionshard sandbox up` with PEERS peers; a laptop paired with
DEVICES of them by codes; a drive set up; `ionshard drive serve` on
127.0.0.1. Beside it, `rclone serve webdav` of a directory on the same
disk, with a password too.

Measured, each ROUNDS times (medians printed, every run listed):
  - one file of BIG_MIB MiB: upload and download through WebDAV (the rclone
    client, the same flags for both servers) and through ionshard's CLI
    (`drive put` / `drive get`);
  - SMALL files of 4 KiB in 100 folders: the same four ways.
Every download is checked byte for byte against what was uploaded. Before
each upload the data is made new (a tag written every 64 KiB): the drive
does not send shards its devices already hold, so re-sent bytes would
measure nothing.
"""

import argparse
import re
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

PASSWORD = "bench drive password"


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r.stdout


def tree_hash(path):
    h = hashlib.blake2b()
    if os.path.isfile(path):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(root, name)
            h.update(os.path.relpath(p, path).encode())
            with open(p, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def freshen(path, tag):
    """Make `path` (a file, or a tree) content never stored before: the
    drive sends only shards its devices lack (the same content makes the
    same shards), so a way run after another on the same bytes would
    measure nothing. Writes `tag` every 64 KiB of each file."""
    mark = tag.to_bytes(8, "little")
    files = [path] if os.path.isfile(path) else [os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs]
    for p in files:
        size = os.path.getsize(p)
        with open(p, "r+b") as f:
            for at in range(0, max(size - 8, 1), 65536):
                f.seek(at)
                f.write(mark)


def make_data(work, big_mib, small):
    big = os.path.join(work, f"big-{big_mib}.bin")
    if not os.path.exists(big):
        with open(big + ".tmp", "wb") as f:
            for _ in range(big_mib):
                f.write(os.urandom(1 << 20))
        os.rename(big + ".tmp", big)
    tree = os.path.join(work, f"small-{small}")
    if not os.path.exists(tree):
        tmp = tree + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for i in range(small):
            d = os.path.join(tmp, f"d{i % 100:02d}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
                f.write(os.urandom(4096))
        os.rename(tmp, tree)
    return big, tree


def edit_measure(a, work, big, laptop, env, theirs, obscured):
    """An edit of 64 bytes in the middle of the large file, synced: what
    ionshard's `drive sync` sends (shards: erasure-coded, so about 1.5x
    the data on 3 devices) beside rclone's copy to `rclone serve webdav`
    (the whole file: a WebDAV remote keeps no modification time, so rclone
    needs --ignore-times to see a same-size edit at all)."""
    ed = os.path.join(work, "edit")
    shutil.rmtree(ed, ignore_errors=True)
    os.makedirs(ed)
    shutil.copyfile(big, os.path.join(ed, "big.bin"))

    def ours():
        out = run([a.bin, "drive", "sync", ed, "--remote", "/edit-bench", "--once", "--json", "--dir", laptop], env=env)
        return json.loads(out.strip().splitlines()[-1])["pass"]["shard_bytes"]

    def rclone(*extra):
        out = subprocess.run(["rclone", "copy", ed, ":webdav:/edit-bench", "--webdav-url", theirs, "--webdav-user", "me",
                              "--webdav-pass", obscured, "--config", "/dev/null", "-v", "--use-json-log",
                              "--stats", "1h", "--exclude", ".ionshard-sync/**", *extra],
                             capture_output=True, text=True, check=True)
        found = [int(x) for x in re.findall(r'"bytes":(\d+)', out.stderr)]
        return found[-1] if found else 0

    def edit(seed):
        with open(os.path.join(ed, "big.bin"), "r+b") as f:
            f.seek(os.path.getsize(os.path.join(ed, "big.bin")) // 2)
            f.write(bytes([seed]) * 64)

    first_ours, first_theirs = ours(), rclone()
    edit(1)
    edit_ours = ours()
    skipped = rclone()
    edit(2)
    edit_theirs = rclone("--ignore-times")
    size = os.path.getsize(os.path.join(ed, "big.bin"))
    print(f"an edit of 64 bytes in a {size / 2**20:.0f} MiB file, synced:")
    print(f"  ionshard drive sync      first {first_ours:>12,} bytes of shards, the edit {edit_ours:>10,}")
    print(f"  rclone copy (WebDAV)     first {first_theirs:>12,} bytes,           the edit {edit_theirs:>10,}"
          f" (with --ignore-times; without it rclone sent {skipped:,}: it missed the edit)")
    print(f"  the edit: ionshard sends {edit_ours / max(edit_theirs, 1):.4f}x what rclone sends", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--devices", type=int, default=3)
    ap.add_argument("--edit-only", action="store_true", help="only the edit-in-a-large-file measure")
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    big, small = make_data(work, a.big_mib, a.small)
    sb = os.path.join(work, "sb")
    subprocess.run([a.bin, "sandbox", "down", "--dir", sb], capture_output=True)
    env_text = run([a.bin, "sandbox", "up", "--peers", str(a.devices), "--dir", sb])
    env = dict(os.environ)
    for line in env_text.splitlines():
        if line.startswith("export "):
            k, v = line[len("export "):].split("=", 1)
            env[k] = v.strip("'")
    env["IONSHARD_DRIVE_PASSWORD"] = PASSWORD
    laptop = os.path.join(work, "laptop")
    shutil.rmtree(laptop, ignore_errors=True)
    procs = []
    try:
        for i in range(a.devices):
            pair = subprocess.Popen([a.bin, "drive", "pair", "--json", "--dir", os.path.join(sb, f"peer{i}")],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            code = json.loads(pair.stdout.readline())["code"]
            run([a.bin, "drive", "join", code, "--json", "--dir", laptop], env=env)
            pair.wait(timeout=60)
        run([a.bin, "drive", "setup", "--json", "--dir", laptop], env=env)
        serve = subprocess.Popen([a.bin, "drive", "serve", "--json", "--dir", laptop, "--listen", "127.0.0.1:0"],
                                 stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serve.log"), "w"),
                                 text=True, env=env)
        procs.append(serve)
        ours = json.loads(serve.stdout.readline())["dav"]
        plain = os.path.join(work, "plain")
        shutil.rmtree(plain, ignore_errors=True)
        os.makedirs(plain)
        port = 4900 + os.getpid() % 90
        theirs = f"http://127.0.0.1:{port}/"
        rs = subprocess.Popen(["rclone", "serve", "webdav", plain, "--addr", f"127.0.0.1:{port}", "--user", "me",
                               "--pass", PASSWORD, "--config", "/dev/null"],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "rclone-serve.log"), "w"))
        procs.append(rs)
        time.sleep(1.0)
        obscured = run(["rclone", "obscure", PASSWORD]).strip()

        def dav(url, *args):
            run(["rclone", *args, "--webdav-url", url, "--webdav-user", "me", "--webdav-pass", obscured,
                 "--config", "/dev/null", "--transfers", "8", "--checkers", "8"])

        def cli(*args):
            run([a.bin, "drive", *args, "--json", "--dir", laptop], env=env)

        sizes = {"big": os.path.getsize(big), "small": sum(os.path.getsize(os.path.join(r, f))
                                                           for r, _, fs in os.walk(small) for f in fs)}
        results = {}
        tag = int(time.time() * 1000)
        edit_measure(a, work, big, laptop, env, theirs, obscured)
        for rnd in range(0 if a.edit_only else a.rounds):
            for what, src in (("big", big), ("small", small)):
                for way in ("webdav-ionshard", "webdav-rclone-serve", "cli-ionshard"):
                    out = os.path.join(work, f"out-{what}-{way}")
                    shutil.rmtree(out, ignore_errors=True)
                    if os.path.exists(out):
                        os.remove(out)
                    dest = f"r{rnd}-{what}"
                    tag += 1
                    freshen(src, tag)
                    want = {what: tree_hash(src)}
                    t0 = time.monotonic()
                    if way == "cli-ionshard":
                        cli("put", src, "--to", f"/{dest}")
                    elif what == "big":
                        dav(ours if way == "webdav-ionshard" else theirs, "copyto", src, f":webdav:/{dest}/big.bin")
                    else:
                        dav(ours if way == "webdav-ionshard" else theirs, "copy", src, f":webdav:/{dest}/tree")
                    t1 = time.monotonic()
                    if way == "cli-ionshard":
                        name = os.path.basename(src)
                        cli("get", f"/{dest}/{name}", out)
                    elif what == "big":
                        dav(ours if way == "webdav-ionshard" else theirs, "copyto", f":webdav:/{dest}/big.bin", out)
                    else:
                        dav(ours if way == "webdav-ionshard" else theirs, "copy", f":webdav:/{dest}/tree", out)
                    t2 = time.monotonic()
                    if tree_hash(out) != want[what]:
                        sys.exit(f"{way} {what}: what came back differs from what went in")
                    shutil.rmtree(out, ignore_errors=True) if os.path.isdir(out) else os.remove(out)
                    if way != "webdav-rclone-serve":
                        # Room on the devices for the next: remove it, and empty the trash.
                        cli("rm", f"/{dest}")
                        cli("trash", "--empty")
                    r = results.setdefault((what, way), {"up": [], "down": []})
                    r["up"].append(t1 - t0)
                    r["down"].append(t2 - t1)
                    print(f"round {rnd + 1} {what:5} {way:20} up {t1 - t0:7.2f} s  down {t2 - t1:7.2f} s", flush=True)
        if a.edit_only:
            return
        print()
        print(f"{'what':6} {'way':20} {'up MB/s':>9} {'down MB/s':>10} {'up files/s':>11} {'down files/s':>13}  (medians of {a.rounds})")
        for (what, way), r in results.items():
            up, down = statistics.median(r["up"]), statistics.median(r["down"])
            mb = sizes[what] / 1e6
            files = 1 if what == "big" else a.small
            print(f"{what:6} {way:20} {mb / up:9.1f} {mb / down:10.1f} {files / up:11.1f} {files / down:13.1f}")
        print()
        for what in ("big", "small"):
            o, t = results[(what, "webdav-ionshard")], results[(what, "webdav-rclone-serve")]
            print(f"{what}: ionshard's WebDAV takes {statistics.median(o['up']) / statistics.median(t['up']):.1f}x "
                  f"rclone serve's time to upload, {statistics.median(o['down']) / statistics.median(t['down']):.1f}x to download "
                  f"(ionshard encrypts, erasure-codes {a.devices} ways and sends to {a.devices} device processes; "
                  f"rclone serve writes a plain directory)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([a.bin, "sandbox", "down", "--dir", sb], capture_output=True)


if __name__ == "__main__":
    main()
