#!/usr/bin/env python3
"""Make testdata/firmware-v1.img and firmware-v2.img, deterministic sample images.

An image shaped like a real firmware: a compressible header and text area
(strings, tables), incompressible blobs (a compressed kernel, a squashfs),
and zero padding. v2 changes 3 places (a version string, 40 KiB of the blob,
a table) as a patch release would. Run from the repository root.
"""
import hashlib


def stream(seed: bytes, n: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.blake2b(seed + counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:n])


def image(version: str) -> bytes:
    header = (f"IONSHARD-SAMPLE-FW version={version} board=rpi4,rk3588\n").encode().ljust(4096, b"\0")
    text = b"".join(
        f"{i:06d} config_option_{i % 97}={i * 31 % 1000} # setting for subsystem {i % 13}\n".encode()
        for i in range(12000)
    )
    kernel = stream(b"kernel", 1_200_000)
    rootfs = stream(b"rootfs", 900_000)
    table = bytes((i * 7 + (3 if version >= "1.1" and 5000 < i < 6000 else 0)) % 251 for i in range(60_000))
    pad = b"\0" * 200_000
    if version >= "1.1":
        kernel = kernel[:600_000] + stream(b"kernel-fix", 40_000) + kernel[640_000:]
    return header + text + kernel + table + rootfs + pad


for name, version in (("firmware-v1.img", "1.0.0"), ("firmware-v2.img", "1.1.0")):
    with open(f"testdata/{name}", "wb") as f:
        f.write(image(version))
