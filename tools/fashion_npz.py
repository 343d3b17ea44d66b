"""Write a slice of the bundled Fashion-MNIST as an ``.npz`` dataset (``images``, ``labels``).

The README's EfficientNet study uses the first 3,000 training and the first 1,000 test images::

    python tools/fashion_npz.py train 3000 ftrain3k.npz
    python tools/fashion_npz.py test 1000 fval1k.npz

``images`` is uint8 (N, 28, 28), ``labels`` int64 (N,), in the IDX files' order; the same
command always writes the same arrays. Needs only NumPy.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data" / "fashion-mnist"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as a NumPy array."""
    raw = gzip.decompress(Path(path).read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_slice(split: str, n: int, start: int = 0, data: Path = DATA):
    """(images uint8 (n, 28, 28), labels int64 (n,)) of the bundled ``train`` or ``test`` files."""
    prefix = "t10k" if split == "test" else "train"
    x = read_idx(data / f"{prefix}-images-idx3-ubyte.gz")[start: start + n]
    y = read_idx(data / f"{prefix}-labels-idx1-ubyte.gz")[start: start + n].astype(np.int64)
    if len(x) < n:
        raise SystemExit(f"fashion_npz: the bundled {split} split has only {len(x) + start} images")
    return x, y


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split", choices=("train", "test"))
    parser.add_argument("n", type=int, help="number of images")
    parser.add_argument("out", type=Path, help="the .npz file to write")
    parser.add_argument("--start", type=int, default=0, help="first image (default 0)")
    args = parser.parse_args(argv)
    x, y = fashion_slice(args.split, args.n, args.start)
    np.savez(args.out, images=x, labels=y)
    print(f"wrote {args.out}: {len(x)} {args.split} images {x.shape[1]}x{x.shape[2]} with labels")


if __name__ == "__main__":
    main()
