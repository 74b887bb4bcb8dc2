#!/usr/bin/env python3
"""ionshard backup beside restic, on the same data in the same run (see
benches/backup-vs-restic.sh, which installs restic and builds ionshard).

Per data set and round: a fresh sandbox network (PEERS peers on loopback,
the backups' coding 10+10) and a fresh restic repository on the same disk;
first backup, an edit of 1% of the files (appended bytes; read-only data
sets get an unchanged second run), second backup, restore, each tool in
turn. Prints medians and ratios: MB/s of each step (bytes of the data set
over the wall time), bytes stored for the edit (ours: new segment bytes,
compressed and encrypted, parity counted apart; restic: its repository's
growth), and each client's peak RSS (time -v).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time


def timed(cmd, env=None, cwd=None):
    """Run cmd under /usr/bin/time -v: (seconds, peak RSS KiB, stdout)."""
    t = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=env, cwd=cwd, capture_output=True, text=True)
    secs = time.monotonic() - t
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return secs, rss, p.stdout


def tree_bytes(root):
    total = 0
    files = 0
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                total += os.path.getsize(p)
                files += 1
    return total, files


def du(path):
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True).stdout.split()[0])


def edit(root, fraction, salt):
    """Append a line to every 1/fraction-th file; returns how many."""
    n = 0
    i = 0
    for d, _, fs in sorted(os.walk(root)):
        for f in sorted(fs):
            i += 1
            if i % fraction == 0:
                with open(os.path.join(d, f), "ab") as h:
                    h.write(f"edit {salt} {i}\n".encode())
                n += 1
    return n


def ours(args, data, work, editable, rnd):
    b = args.bin
    sb = os.path.join(work, "sandbox")
    home = os.path.join(work, "home")
    shutil.rmtree(home, ignore_errors=True)
    env_text = subprocess.run([b, "sandbox", "up", "--peers", str(args.peers), "--dir", sb],
                              capture_output=True, text=True, check=True).stdout
    env = dict(os.environ, IONSHARD_HOME=home)
    for line in env_text.splitlines():
        m = re.match(r"export (\w+)=(.*)", line)
        if m:
            env[m.group(1)] = m.group(2).strip("'\"")
    try:
        subprocess.run([b, "backup", "init", "--json"], env=env, check=True, capture_output=True)
        run = [b, "backup", "run", data, "--coding", args.coding, "--json"]
        s1, rss1, out1 = timed(run, env)
        r1 = json.loads(out1.strip().splitlines()[-1])
        edited = edit(data, 100, f"ours{rnd}") if editable else 0
        s2, rss2, out2 = timed(run, env)
        r2 = json.loads(out2.strip().splitlines()[-1])
        target = os.path.join(work, "restore-ours")
        shutil.rmtree(target, ignore_errors=True)
        s3, rss3, _ = timed([b, "backup", "restore", "latest", "--target", target, "--json"], env)
        restored = os.path.join(target, data.lstrip("/"))
        same = subprocess.run(["diff", "-rq", "--no-dereference", data, restored], capture_output=True).returncode == 0
        shutil.rmtree(target, ignore_errors=True)
        st1, st2 = r1["snapshot"]["stats"], r2["snapshot"]["stats"]
        return {
            "first_s": s1, "second_s": s2, "restore_s": s3, "rss_mib": max(rss1, rss2, rss3) / 1024,
            "edit_stored": st2["new_segment_bytes"], "edit_read": st2["bytes_read"], "edited": edited,
            "first_stored": st1["new_segment_bytes"], "same": same,
        }
    finally:
        subprocess.run([b, "backup", "--help"], capture_output=True)
        subprocess.run([b, "sandbox", "down", "--dir", sb], capture_output=True)


def restic(args, data, work, editable, rnd):
    repo = os.path.join(work, "restic-repo")
    shutil.rmtree(repo, ignore_errors=True)
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=repo, RESTIC_CACHE_DIR=os.path.join(work, "restic-cache"))
    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True)
    s1, rss1, _ = timed(["restic", "backup", "--quiet", data], env)
    before = du(repo)
    edited = edit(data, 100, f"restic{rnd}") if editable else 0
    s2, rss2, _ = timed(["restic", "backup", "--quiet", data], env)
    grown = du(repo) - before
    target = os.path.join(work, "restore-restic")
    shutil.rmtree(target, ignore_errors=True)
    s3, rss3, _ = timed(["restic", "restore", "latest", "--target", target], env)
    same = subprocess.run(["diff", "-rq", "--no-dereference", data, os.path.join(target, data.lstrip("/"))],
                          capture_output=True).returncode == 0
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(repo, ignore_errors=True)
    return {"first_s": s1, "second_s": s2, "restore_s": s3, "rss_mib": max(rss1, rss2, rss3) / 1024,
            "edit_stored": grown, "edited": edited, "same": same}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", action="append", required=True, help="NAME=DIR[:ro]")
    ap.add_argument("--work", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peers", type=int, default=20)
    ap.add_argument("--coding", default="10+10")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    rows = []
    for spec in args.data:
        name, path = spec.split("=", 1)
        editable = not path.endswith(":ro")
        path = os.path.abspath(path.removesuffix(":ro"))
        size, files = tree_bytes(path)
        res = {"ours": [], "restic": []}
        for r in range(args.rounds):
            # In turn, the same machine for both; ours first in even rounds.
            order = [("ours", ours), ("restic", restic)] if r % 2 == 0 else [("restic", restic), ("ours", ours)]
            for tool, fn in order:
                out = fn(args, path, args.work, editable, r)
                print(f"{name} round {r} {tool}: {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()})}", flush=True)
                res[tool].append(out)
        med = lambda tool, k: statistics.median(x[k] for x in res[tool])
        mbps = lambda tool, k: size / med(tool, k) / 1e6
        print(f"\n{name}: {size / 2**20:.0f} MiB in {files} files, medians of {args.rounds} (coding {args.coding} on {args.peers} peers; restic {subprocess.run(['restic', 'version'], capture_output=True, text=True).stdout.split()[1]} to this disk)")
        print(f"{'':24}{'ionshard':>12}{'restic':>12}{'ratio':>9}")
        for label, k in [("first backup MB/s", "first_s"), ("second backup MB/s", "second_s"), ("restore MB/s", "restore_s")]:
            a, b = mbps("ours", k), mbps("restic", k)
            print(f"{label:24}{a:12.1f}{b:12.1f}{a / b:8.2f}x")
        if editable:
            a, b = med("ours", "edit_stored"), med("restic", "edit_stored")
            print(f"{'bytes stored for the edit':24}{a:12.0f}{b:12.0f}{a / max(b, 1):8.2f}x   ({res['ours'][0]['edited']} files edited; ours without parity)")
        a, b = med("ours", "rss_mib"), med("restic", "rss_mib")
        print(f"{'client peak RSS MiB':24}{a:12.1f}{b:12.1f}{a / b:8.2f}x")
        print(f"{'restores byte-exact':24}{str(all(x['same'] for x in res['ours'])):>12}{str(all(x['same'] for x in res['restic'])):>12}")
        rows.append(name)


if __name__ == "__main__":
    main()
