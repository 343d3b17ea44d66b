"""Slices of the bundled Fashion-MNIST and paths of the bundled zoo, for pipeline tests.

The IDX files are read here with gzip + numpy (not with xnetmap's readers) so
that tests compare xnetmap against an independent path.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
DATA = ROOT / "data" / "fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(Path(path).read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion(split: str, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 28, 28), labels int64 (n,)) from the bundled files."""
    prefix = "t10k" if split == "test" else "train"
    x = read_idx(DATA / f"{prefix}-images-idx3-ubyte.gz")[start : start + n]
    y = read_idx(DATA / f"{prefix}-labels-idx1-ubyte.gz")[start : start + n].astype(np.int64)
    return x, y


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    if labels is None:
        np.savez(path, images=images)
    else:
        np.savez(path, images=images, labels=labels)
    return path


def model_input(images: np.ndarray) -> np.ndarray:
    """The zoo's preprocessing, written out by hand: [N, 1, 28, 28] float32."""
    x = images.astype(np.float32)[:, None] / np.float32(255.0)
    return ((x - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)


def run_onnx(path, x: np.ndarray, output: int = 0) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i : i + 512]})[output] for i in range(0, len(x), 512)]
    return np.concatenate(outs)
