"""Regenerate the bundled Fashion-MNIST subset in ``data/fashion-mnist/`` (deterministic).

Source: the Debian package ``dataset-fashion-mnist`` (files in /usr/share/datasets/fashion-mnist).

- ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``: copied byte for byte
  (all 10,000 test images and labels).
- ``train-images-idx3-ubyte.gz`` and ``train-labels-idx1-ubyte.gz``: the first 20,000 training
  images and labels, written as new IDX files (header count 20000) and gzipped with
  ``mtime=0``, no file name and compression level 9, so the bytes depend only on the input and
  zlib.

Usage::

    python tools/bundle_fashion_mnist.py [--src /usr/share/datasets/fashion-mnist]
                                         [--dst data/fashion-mnist] [--train-count 20000]

Prints the sha256 of every written file (recorded in data/fashion-mnist/README.md).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import struct
from pathlib import Path

SRC = Path("/usr/share/datasets/fashion-mnist")
DST = Path(__file__).resolve().parent.parent / "data" / "fashion-mnist"


def read_idx_bytes(path: Path) -> tuple[list[int], bytes]:
    """Return (dims, payload bytes) of a gzipped unsigned-byte IDX file."""
    raw = gzip.open(path, "rb").read()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = list(struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim]))
    payload = raw[4 + 4 * ndim :]
    expected = 1
    for d in dims:
        expected *= d
    if len(payload) != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes), found {len(payload)}")
    return dims, payload


def write_idx_prefix(src: Path, dst: Path, count: int) -> None:
    """Write the first ``count`` items of IDX file ``src`` to ``dst`` (gzip, mtime=0)."""
    dims, payload = read_idx_bytes(src)
    if count > dims[0]:
        raise ValueError(f"{src}: asked for {count} items, file has {dims[0]}")
    item = len(payload) // dims[0]
    header = bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", count, *dims[1:])
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as gz:
        gz.write(header + payload[: count * item])
    atomic_write(dst, buf.getvalue())


def atomic_write(dst: Path, data: bytes) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=SRC)
    ap.add_argument("--dst", type=Path, default=DST)
    ap.add_argument("--train-count", type=int, default=20000)
    args = ap.parse_args()
    args.dst.mkdir(parents=True, exist_ok=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        tmp = args.dst / (name + ".tmp")
        shutil.copyfile(args.src / name, tmp)
        os.replace(tmp, args.dst / name)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        write_idx_prefix(args.src / name, args.dst / name, args.train_count)
    for name in sorted(p.name for p in args.dst.glob("*.gz")):
        print(f"{sha256(args.dst / name)}  {name}  {(args.dst / name).stat().st_size}")


if __name__ == "__main__":
    main()
