#!/usr/bin/env python3
"""A switch with shaped links, in user space, for the real-links bench.

This machine's kernel has no netem (CONFIG_NET_SCH_NETEM is not set; only
HTB and TBF are built in), so delay cannot be added with tc. This does what
netem would: each node's network namespace gets a TAP device whose other end
is this process, an Ethernet switch (MAC learning, flooding for broadcast)
that gives every port a rate and a one-way delay in each direction and a
queue of bounded depth (tail drop, as a home router's buffer). A frame from
A to B waits for A's uplink (serialised at A's rate), travels A's delay plus
B's delay, then waits for B's downlink (at B's rate): the round trip between
two nodes is twice the sum of their delays.

    linkemu.py SPEC.json

SPEC: {"ports": [{"tap": "lkA", "netns": "ns", "addr": "198.51.100.2/24",
                  "up_mbit": 100, "down_mbit": 100, "delay_ms": 10}, ...],
       "queue_ms": 100}
(netns null: the TAP stays in this namespace.) Prints "ready" once every
port is up, then switches until stdin closes or it is killed. Statistics
(frames, bytes, drops per port: at the sender's uplink and at the
receiver's downlink) go to stderr at exit, and on SIGUSR1 as one line
{"counts": N, "ports": [...]} (N counting the signals), so a bench can
take what one phase cost.
"""

import fcntl
import heapq
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
ARRIVE, DELIVER = 0, 1


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Port:
    def __init__(self, spec, queue_ms):
        self.name = spec["tap"]
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", self.name.encode(), IFF_TAP | IFF_NO_PI))
        self.up = spec.get("up_mbit", 1000) * 1e6 / 8  # bytes per second
        self.down = spec.get("down_mbit", 1000) * 1e6 / 8
        self.delay = spec.get("delay_ms", 0) / 1000.0
        self.queue = queue_ms / 1000.0
        self.up_free = 0.0  # when the uplink is next free
        self.down_free = 0.0
        self.stats = {"in": 0, "out": 0, "in_bytes": 0, "out_bytes": 0, "dropped": 0, "dropped_up": 0, "dropped_down": 0}
        ns = spec.get("netns")
        if ns:
            run("ip", "link", "set", self.name, "netns", ns)
            ip = ["ip", "-n", ns]
        else:
            ip = ["ip"]
        run(*ip, "addr", "add", spec["addr"], "dev", self.name)
        run(*ip, "link", "set", self.name, "up")


def main():
    spec = json.load(open(sys.argv[1]))
    ports = [Port(p, spec.get("queue_ms", 100)) for p in spec["ports"]]
    by_fd = {p.fd: p for p in ports}
    macs = {}  # MAC -> port
    due = []  # (time, seq, port, frame)
    seq = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    asked = []
    signal.signal(signal.SIGUSR1, lambda *_: asked.append(1))
    told = 0
    print("ready", flush=True)
    poll = select.poll()
    for p in ports:
        poll.register(p.fd, select.POLLIN)
    poll.register(sys.stdin.fileno(), select.POLLIN | select.POLLHUP)
    while not stop:
        if len(asked) > told:
            told = len(asked)
            counts = [{"port": p.name, **p.stats} for p in ports]
            print(json.dumps({"counts": told, "ports": counts}), file=sys.stderr, flush=True)
        now = time.monotonic()
        wait = max(0.0, due[0][0] - now) if due else 0.5
        for fd, ev in poll.poll(wait * 1000):
            if fd == sys.stdin.fileno():
                if ev & (select.POLLHUP | select.POLLERR) or not os.read(fd, 4096):
                    stop.append(1)
                continue
            src = by_fd[fd]
            # Drain what is there now.
            for _ in range(64):
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if len(frame) < 14:
                    continue
                now = time.monotonic()
                n = len(frame)
                src.stats["in"] += 1
                src.stats["in_bytes"] += n
                macs[frame[6:12]] = src
                dst = macs.get(frame[0:6])
                targets = [dst] if dst is not None and not (frame[0] & 1) else [p for p in ports if p is not src]
                # Uplink of the sender: serialised, bounded queue.
                if src.up_free - now > src.queue:
                    src.stats["dropped"] += 1
                    src.stats["dropped_up"] += 1
                    continue
                sent = max(now, src.up_free) + n / src.up
                src.up_free = sent
                for d in targets:
                    if d is src:
                        continue
                    seq += 1
                    heapq.heappush(due, (sent + src.delay + d.delay, seq, ARRIVE, d, frame))
        now = time.monotonic()
        while due and due[0][0] <= now:
            at, _, kind, d, frame = heapq.heappop(due)
            if kind == ARRIVE:
                # The receiver's downlink, first come first served from here.
                if d.down_free - at > d.queue:
                    d.stats["dropped"] += 1
                    d.stats["dropped_down"] += 1
                    continue
                out = max(at, d.down_free) + len(frame) / d.down
                d.down_free = out
                seq += 1
                heapq.heappush(due, (out, seq, DELIVER, d, frame))
                continue
            try:
                os.write(d.fd, frame)
                d.stats["out"] += 1
                d.stats["out_bytes"] += len(frame)
            except OSError:
                d.stats["dropped"] += 1
                d.stats["dropped_down"] += 1
    for p in ports:
        print(json.dumps({"port": p.name, **p.stats}), file=sys.stderr)


if __name__ == "__main__":
    main()
