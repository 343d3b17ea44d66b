"""Dataset layouts on small real files: ImageFolder, flat + labels, CSV, arrays, unlabeled."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from xnetmap.data import Dataset, UnreadableImage, open_dataset
from xnetmap.errors import InputError


def _img(path, value, size=(6, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path, format="PNG")


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "train"
    _img(root / "dog" / "b.png", 1)
    _img(root / "dog" / "a.png", 2)
    _img(root / "cat" / "x.png", 3)
    _img(root / "cat" / "sub" / "y.jpeg", 4)
    (root / "cat" / "notes.txt").write_text("not an image")
    _img(root / "emu" / ".hidden.png", 5)
    _img(root / "emu" / "e.PNG", 6)
    return root


def test_image_folder_sorted_classes(image_folder):
    ds = open_dataset(image_folder)
    assert isinstance(ds, Dataset) and ds.kind == "folder"
    assert ds.class_names == ["cat", "dog", "emu"]
    assert ds.ids == ["cat/sub/y.jpeg", "cat/x.png", "dog/a.png", "dog/b.png", "emu/e.PNG"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 2] and ds.labels.dtype == np.int64
    assert ds.load(2).getpixel((0, 0)) == (2, 2, 2)
    assert ds.load(-1).getpixel((0, 0)) == (6, 6, 6)
    assert "5 images" in ds.describe() and "3 classes" in ds.describe()


def test_image_folder_with_class_index(image_folder, tmp_path):
    (tmp_path / "classes.txt").write_text("emu big bird\ndog\nyak\ncat\n")
    ds = open_dataset(f"folder:{image_folder}", class_index=tmp_path / "classes.txt")
    assert ds.class_names == ["emu", "dog", "yak", "cat"]
    assert ds.labels.tolist() == [3, 3, 1, 1, 0]
    (tmp_path / "ci.json").write_text(json.dumps({"0": ["dog", "Dog"], "1": ["cat", "Cat"],
                                                  "2": ["emu", "Emu"]}))
    ds = open_dataset(image_folder, class_index=tmp_path / "ci.json")
    assert ds.labels.tolist() == [1, 1, 0, 0, 2]
    (tmp_path / "short.txt").write_text("dog\ncat\n")
    with pytest.raises(InputError, match="emu"):
        open_dataset(image_folder, class_index=tmp_path / "short.txt")


def test_fingerprint_stable_and_sensitive(image_folder):
    f1 = open_dataset(image_folder).fingerprint()
    assert f1 == open_dataset(image_folder).fingerprint() and len(f1) == 64
    p = image_folder / "dog" / "a.png"
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert open_dataset(image_folder).fingerprint() != f1


def test_subset_ids_and_labels_follow(image_folder):
    ds = open_dataset(image_folder)
    sub = ds.subset([4, 0, 2])
    assert sub.ids == ["emu/e.PNG", "cat/sub/y.jpeg", "dog/a.png"]
    assert sub.labels.tolist() == [2, 0, 1] and len(sub) == 3
    assert sub.load(0).getpixel((0, 0)) == (6, 6, 6)
    sub2 = sub.subset([1])
    assert sub2.ids == ["cat/sub/y.jpeg"] and sub2.load(0).getpixel((0, 0)) == (4, 4, 4)
    assert sub.fingerprint() != ds.fingerprint()
    assert sub.fingerprint() == ds.subset([4, 0, 2]).fingerprint()
    with pytest.raises(IndexError):
        ds.subset([5])


@pytest.fixture
def flat_folder(tmp_path):
    root = tmp_path / "val"
    for i, name in enumerate(["ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000001.JPEG",
                              "ILSVRC2012_val_00000003.JPEG"]):
        _img(root / name, 10 + i)
    return root


def test_flat_ilsvrc_ground_truth_layout(flat_folder, tmp_path):
    # One label per line, in sorted file-name order (ILSVRC2012 validation ground truth).
    (tmp_path / "gt.txt").write_text("65\n970\n230\n")
    ds = open_dataset(flat_folder, labels=tmp_path / "gt.txt")
    assert ds.kind == "flat"
    assert ds.ids == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG",
                      "ILSVRC2012_val_00000003.JPEG"]
    assert ds.labels.tolist() == [65, 970, 230]
    assert ds.load(0).getpixel((0, 0)) == (11, 11, 11)  # ..01 was written second
    (tmp_path / "bad.txt").write_text("1\n2\n")
    with pytest.raises(InputError, match="2 labels but .* 3 image files"):
        open_dataset(f"flat:{flat_folder}", labels=tmp_path / "bad.txt")


def test_flat_csv_and_file_label_lines(flat_folder, tmp_path):
    (tmp_path / "l.csv").write_text(
        "file,label\nILSVRC2012_val_00000003.JPEG,cat\nILSVRC2012_val_00000001.JPEG,dog\n")
    ds = open_dataset(flat_folder, labels=tmp_path / "l.csv")
    assert ds.ids == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"]
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [1, 0]
    (tmp_path / "val.txt").write_text(
        "ILSVRC2012_val_00000002.JPEG 7\nILSVRC2012_val_00000001.JPEG 5\n")
    ds = open_dataset(flat_folder, labels=tmp_path / "val.txt")
    assert ds.labels.tolist() == [5, 7]
    (tmp_path / "miss.csv").write_text("nope.JPEG,1\n")
    with pytest.raises(InputError, match="missing"):
        open_dataset(flat_folder, labels=tmp_path / "miss.csv")


def test_flat_integer_labels_with_a_typo_are_refused(flat_folder, tmp_path):
    # sorting the tokens as names would silently turn "65" into class 0
    (tmp_path / "gt.txt").write_text("65\n97O\n230\n")
    with pytest.raises(InputError, match=r"'97O' \(entry 2\) is not an integer"):
        open_dataset(flat_folder, labels=tmp_path / "gt.txt")
    (tmp_path / "names.txt").write_text("cat\ndog\ncat\n")  # all names: still fine
    assert open_dataset(flat_folder, labels=tmp_path / "names.txt").labels.tolist() == [0, 1, 0]


def test_undecodable_file_names_fingerprint_and_load(tmp_path):
    root = tmp_path / "u"
    _img(root / "a.png", 1)
    raw = os.fsencode(root) + b"/b\xff.png"  # not UTF-8: Python keeps it as a surrogate
    _img(root / "tmp.png", 2)
    os.rename(root / "tmp.png", raw)
    ds = open_dataset(f"unlabeled:{root}")
    assert ds.ids == ["a.png", "b\udcff.png"]
    assert len(ds.fingerprint()) == 64 and ds.load(1).getpixel((0, 0)) == (2, 2, 2)


def test_flat_labels_file_inside_folder_detected(flat_folder):
    (flat_folder / "labels.csv").write_text("ILSVRC2012_val_00000002.JPEG,4\n")
    ds = open_dataset(flat_folder)
    assert ds.kind == "flat" and ds.ids == ["ILSVRC2012_val_00000002.JPEG"]
    # The labels file itself as the spec: files relative to its folder.
    ds2 = open_dataset(flat_folder / "labels.csv")
    assert ds2.ids == ds.ids and ds2.labels.tolist() == [4]


def test_unlabeled_folder_recursive(flat_folder):
    _img(flat_folder / "deeper" / "z.png", 99)
    ds = open_dataset(flat_folder)
    assert ds.kind == "unlabeled" and ds.labels is None and ds.class_names is None
    assert ds.ids[-1] == "deeper/z.png" and len(ds) == 4
    assert "unlabeled" in ds.describe()
    assert open_dataset(f"unlabeled:{flat_folder}").ids == ds.ids


def test_bad_file_in_dataset_raises_unreadable(flat_folder):
    (flat_folder / "ILSVRC2012_val_00000004.JPEG").write_bytes(b"\xff\xd8\xff garbage")
    ds = open_dataset(f"unlabeled:{flat_folder}")
    with pytest.raises(UnreadableImage) as info:
        ds.load(3)
    assert "ILSVRC2012_val_00000004.JPEG" in info.value.path


def test_npy_images_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 8, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([0, 1, 2, 1, 0]))
    ds = open_dataset(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    assert ds.kind == "npy" and len(ds) == 5 and ds.ids[0] == "x.npy#0"
    assert ds.labels.tolist() == [0, 1, 2, 1, 0]
    img = ds.load(3)
    assert img.mode == "RGB" and img.size == (6, 8)
    np.testing.assert_array_equal(np.asarray(img), x[3])
    assert open_dataset(tmp_path / "x.npy").labels is None
    np.save(tmp_path / "f.npy", x.astype(np.float32))
    with pytest.raises(InputError, match="uint8"):
        open_dataset(tmp_path / "f.npy")


def test_npz_keys_greyscale_and_class_names(tmp_path):
    x = np.arange(4 * 3 * 2, dtype=np.uint8).reshape(4, 3, 2)
    np.savez(tmp_path / "d.npz", x_train=x, y=np.array([1, 0, 1, 1]),
             class_names=np.array(["no", "yes"]))
    ds = open_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.kind == "npz" and ds.labels.tolist() == [1, 0, 1, 1]
    assert ds.class_names == ["no", "yes"] and ds.ids[1] == "d.npz:x_train#1"
    np.testing.assert_array_equal(np.asarray(ds.load(2)), x[2])
    f = ds.fingerprint()
    np.savez(tmp_path / "d.npz", x_train=x + 1, y=np.array([1, 0, 1, 1]),
             class_names=np.array(["no", "yes"]))
    assert open_dataset(tmp_path / "d.npz").fingerprint() != f


def test_npz_nchw_is_transposed(tmp_path):
    x = np.zeros((2, 3, 5, 7), dtype=np.uint8)
    x[:, 0] = 200  # red plane
    np.savez(tmp_path / "c.npz", images=x, labels=np.array([0, 1]))
    img = open_dataset(tmp_path / "c.npz").load(0)
    assert img.size == (7, 5) and img.getpixel((0, 0)) == (200, 0, 0)


def test_bad_specs_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_dataset(tmp_path / "nothing")
    with pytest.raises(InputError, match="unknown dataset kind"):
        open_dataset("tarball:" + str(tmp_path))
    with pytest.raises(InputError, match="names no path"):
        open_dataset("folder:")  # not silently the current folder
    (tmp_path / "weird.bin").write_bytes(b"x")
    with pytest.raises(InputError, match="cannot tell"):
        open_dataset(tmp_path / "weird.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        open_dataset(tmp_path / "empty")
