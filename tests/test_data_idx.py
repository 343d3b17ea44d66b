"""IDX files: round trip through a writer written here, gz and raw, label pairing."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from xnetmap.data import open_dataset
from xnetmap.data.idx import labels_path_for, read_idx, write_idx
from xnetmap.errors import InputError


def _write_idx_by_hand(path, a: np.ndarray) -> None:
    """Independent IDX writer (the format spec, not xnetmap's writer)."""
    code = {np.dtype("u1"): 0x08, np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D}[a.dtype]
    body = bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    body += a.astype(a.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(body)
    else:
        with open(path, "wb") as fh:
            fh.write(body)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_reader_matches_hand_written_file(tmp_path, suffix):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    floats = rng.normal(size=(3, 2)).astype(np.float32)
    ints = np.array([-5, 0, 70000], dtype=np.int32)
    for name, a in (("i", images), ("f", floats), ("n", ints)):
        _write_idx_by_hand(tmp_path / f"{name}-idx-ubyte{suffix}", a)
        back = read_idx(tmp_path / f"{name}-idx-ubyte{suffix}")
        assert back.shape == a.shape
        np.testing.assert_array_equal(back, a)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_writer_round_trip(tmp_path, suffix):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"x-images-idx3-ubyte{suffix}", a)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    np.testing.assert_array_equal(read_idx(path), a)


def test_truncated_and_garbage_idx_are_input_errors(tmp_path):
    a = np.zeros((4, 3, 3), dtype=np.uint8)
    p = write_idx(tmp_path / "a-images-idx3-ubyte", a)
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_idx(p)
    (tmp_path / "b-images-idx3-ubyte").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(InputError, match="not an IDX file"):
        read_idx(tmp_path / "b-images-idx3-ubyte")


@pytest.mark.parametrize(
    "images, labels",
    [
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte.gz"),  # mixed compression
        ("x-images.idx3-ubyte", "x-labels.idx1-ubyte"),
    ],
)
def test_idx_dataset_pairs_labels(tmp_path, images, labels):
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    y = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    _write_idx_by_hand(tmp_path / images, imgs)
    _write_idx_by_hand(tmp_path / labels, y)
    assert labels_path_for(tmp_path / images) == tmp_path / labels
    ds = open_dataset(tmp_path / images)
    assert ds.kind == "idx" and len(ds) == 6
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [3, 1, 4, 1, 5, 9]
    assert ds.ids == [f"{images}#{i}" for i in range(6)]
    img = ds.load(4)
    assert img.mode == "L" and img.size == (28, 28)
    np.testing.assert_array_equal(np.asarray(img), imgs[4])
    # A folder with exactly one images file is accepted as the dataset too.
    assert open_dataset(f"idx:{tmp_path}").labels.tolist() == ds.labels.tolist()


def test_idx_without_labels_and_count_mismatch(tmp_path):
    write_idx(tmp_path / "u-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    ds = open_dataset(tmp_path / "u-images-idx3-ubyte")
    assert ds.labels is None and "no labels file" in ds.describe()
    write_idx(tmp_path / "u-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(InputError, match="4 labels for 3 images"):
        open_dataset(tmp_path / "u-images-idx3-ubyte")


def test_idx_fingerprint_is_content_hash(tmp_path):
    a = np.zeros((3, 2, 2), np.uint8)
    write_idx(tmp_path / "a-images-idx3-ubyte.gz", a)
    write_idx(tmp_path / "a-labels-idx1-ubyte.gz", np.array([0, 1, 2], np.uint8))
    f1 = open_dataset(tmp_path / "a-images-idx3-ubyte.gz").fingerprint()
    assert f1 == open_dataset(tmp_path / "a-images-idx3-ubyte.gz").fingerprint()
    a[1, 0, 0] = 1
    write_idx(tmp_path / "a-images-idx3-ubyte.gz", a)
    assert open_dataset(tmp_path / "a-images-idx3-ubyte.gz").fingerprint() != f1
