#!/usr/bin/env python3
"""A generated tree for the backup bench: about MIB MiB in FILES files of
mixed sizes (most small, a few large), half of them text that compresses,
half noise that does not. Deterministic (seeded), so runs compare.

    benches/make_tree.py DIR MIB FILES
"""
import os
import random
import sys

def main():
    root, mib, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(20261205)
    # Sizes: 70% 1-16 KiB, 25% 16-256 KiB, 5% 256 KiB-8 MiB, scaled to the total.
    sizes = []
    for _ in range(files):
        r = rng.random()
        if r < 0.70:
            sizes.append(rng.randint(1 << 10, 16 << 10))
        elif r < 0.95:
            sizes.append(rng.randint(16 << 10, 256 << 10))
        else:
            sizes.append(rng.randint(256 << 10, 8 << 20))
    scale = (mib << 20) / sum(sizes)
    sizes = [max(1, int(s * scale)) for s in sizes]
    words = [("%x" % rng.getrandbits(24)) for _ in range(4000)]
    noise = rng.randbytes(16 << 20)
    for i, size in enumerate(sizes):
        d = os.path.join(root, "d%02d" % (i % 97), "e%03d" % (i % 1009 // 97))
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "f%06d.%s" % (i, "txt" if i % 2 == 0 else "bin"))
        with open(path, "wb") as f:
            if i % 2 == 0:
                out = bytearray()
                while len(out) < size:
                    out += (" ".join(rng.choice(words) for _ in range(12)) + "\n").encode()
                f.write(out[:size])
            else:
                start = rng.randrange(0, len(noise) - min(size, len(noise)) + 1)
                chunk = noise[start:start + size]
                while len(chunk) < size:
                    chunk += rng.randbytes(min(size - len(chunk), 1 << 20))
                f.write(chunk)

if __name__ == "__main__":
    main()
