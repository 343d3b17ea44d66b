"""Issue 11: no wrong verdict with exit 0 (label spaces, non-finite outputs, probe classes,
unmeasured default gates, train/val overlap, silent assumptions, fp16 on the CPU provider).

Each case builds its bad input here (tiny ONNX models made with onnx.helper, small image
folders) and asserts the exit code and the key words of what the user sees.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from cli_run import run_cli
from trust_fixtures import image_folder, tiny_classifier

from xnetmap.data import open_dataset, shared_samples
from xnetmap.study.labels import place_classes


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """Models and folders shared by the tests of this module."""
    root = tmp_path_factory.mktemp("trust")
    d = {"root": root, "cache": root / "cache"}
    d["wide_a"] = tiny_classifier(root / "wide_a.onnx", 1000, 0)
    d["wide_b"] = tiny_classifier(root / "wide_b.onnx", 1000, 1)
    d["a"] = tiny_classifier(root / "a.onnx", 3, 0)
    d["b"] = tiny_classifier(root / "b.onnx", 3, 1)
    d["named"] = image_folder(root / "named", ["cat", "dog", "fish"])
    d["named_train"] = image_folder(root / "named_train", ["cat", "dog", "fish"], seed=7)
    d["numeric"] = image_folder(root / "numeric", ["0", "1", "2"], seed=2)
    d["numeric_train"] = image_folder(root / "numeric_train", ["0", "1", "2"], seed=3)
    return d


def _check(w, *args):
    return run_cli("check", *args, "--cache", w["cache"], "-q")


# ---- case 1: dataset classes that cannot be placed on the classifier outputs ----------


def test_named_classes_on_1000_way_models_without_labels_are_refused(w, tmp_path):
    code, out = _check(w, w["wide_a"], w["wide_b"], "--val", w["named"])
    assert code == 2, out
    for words in ("cannot place the dataset's classes", "3 classes", "1000 outputs",
                  "'cat', 'dog', 'fish'", "no xnetmap.labels", "--head probe", "--class-index",
                  "xnetmap annotate MODEL --labels"):
        assert words in out, (words, out)
    out_dir = tmp_path / "study"
    code, out = run_cli("run-study", w["wide_a"], w["wide_b"], "--train", w["named_train"],
                        "--val", w["named"], "-o", out_dir, "--cache", w["cache"], "-q")
    assert code == 2 and "cannot place" in out and "--head probe" in out, out
    assert not out_dir.exists()  # refused before any work


def test_class_index_file_places_named_classes(w, tmp_path):
    index = tmp_path / "classes.json"
    index.write_text(json.dumps({"cat": 281, "dog": 207, "fish": 1}))
    code, out = _check(w, w["wide_a"], w["wide_a"], "--val", w["named"], "--class-index", index)
    assert code == 0, out
    text = tmp_path / "classes.txt"
    text.write_text("cat 281\ndog 207\nfish 1\n")
    ds = open_dataset(w["named"], class_index=text)
    class_map, _ = place_classes(ds, 1000, None)
    # cat, dog, fish sit at outputs 281, 207, 1 (ids are output indices)
    assert [ds.class_names[c] for c in (281, 207, 1)] == ["cat", "dog", "fish"]
    assert class_map is None and set(np.unique(ds.labels)) == {1, 207, 281}
    out_dir = tmp_path / "study"
    code, out = run_cli("run-study", w["wide_a"], w["wide_b"], "--train", w["named_train"],
                        "--val", w["named"], "--class-index", text, "-o", out_dir,
                        "--cache", w["cache"], "--solver", "lstsq", "--bootstrap", "20", "-q")
    assert code == 0, out
    report = json.loads((out_dir / "report.json").read_text())
    assert report["labelled"] is True
    # 12 val samples for features 4 wide: under 5 x 4, so CKA comes with a warning
    assert any("CKA is computed on 12 val samples" in n for n in report["notes"])


def test_numeric_folders_are_output_indices(tmp_path):
    root = image_folder(tmp_path / "num", ["0", "10", "2"], per_class=1)
    ds = open_dataset(root)  # ids follow sorted names: "0" -> 0, "10" -> 1, "2" -> 2
    class_map, notes = place_classes(ds, 1000, None)
    assert list(class_map) == [0, 10, 2] and notes == []
    with pytest.raises(Exception, match="class id 10 is beyond the last output"):
        place_classes(ds, 5, None)
    code, out = run_cli("check", "--help")
    assert "0..K-1" in " ".join(out.split())


def test_a_dataset_root_is_named_as_such(w, tmp_path):
    root = image_folder(tmp_path / "ds", ["train", "val"])
    code, out = _check(w, w["wide_a"], w["wide_b"], "--val", root)
    assert code == 2 and "looks like a dataset root" in out, out


def test_class_names_missing_from_the_models_labels_are_refused(w, tmp_path):
    labelled = tiny_classifier(tmp_path / "lab.onnx", 3, 0, labels=["cat", "dog", "cow"])
    code, out = _check(w, labelled, labelled, "--val", w["named"])
    assert code == 2 and "'fish' are not among the models' labels" in out, out
    assert "'cat', 'dog', 'cow'" in out


def test_same_width_without_labels_is_noted_as_an_assumption(w):
    code, out = _check(w, w["a"], w["a"], "--val", w["named"])
    assert code == 0, out
    assert "follow its sorted class names" in out


# ---- case 2: non-finite logits or features fail the gate ------------------------------


@pytest.fixture(scope="module")
def nan_models(w):
    root = w["root"]
    return (tiny_classifier(root / "nan_ref.onnx", 3, 0, nan_above=50.0),
            tiny_classifier(root / "nan_cand.onnx", 3, 1, nan_above=50.0),
            image_folder(root / "half_bright", ["0", "1", "2"], seed=11, bright=0.5),
            image_folder(root / "half_bright_train", ["0", "1", "2"], seed=12, bright=0.5))


def test_nan_outputs_on_both_sides_fail_the_check(w, nan_models):
    ref, cand, val, _ = nan_models
    code, out = _check(w, ref, cand, "--val", val)
    assert code == 1, out
    assert "FAIL  nonfinite_rows_reference" in out and "FAIL  nonfinite_rows_candidate" in out
    assert "reference (nan_ref.onnx) gives NaN or inf features or logits on 6 of 12 val rows" \
        in out


def test_nan_outputs_fail_the_check_with_train(w, nan_models, tmp_path):
    ref, cand, val, train = nan_models
    report = tmp_path / "check.json"
    code, out = _check(w, ref, cand, "--val", val, "--train", train, "--json", report)
    assert code == 1, out
    assert "6 train rows" in out and "map-based comparison skipped" in out
    result = json.loads(report.read_text())
    assert result["passed"] is False
    names = {m["name"] for m in result["metrics"] if m["passed"] is False}
    assert {"nonfinite_rows_reference", "nonfinite_rows_candidate"} <= names


def test_nan_candidate_against_a_finite_reference_fails(w, nan_models):
    _, cand, val, _ = nan_models
    code, out = _check(w, w["a"], cand, "--val", val)
    assert code == 1 and "nonfinite_rows_candidate" in out, out
    assert "nonfinite_rows_reference" not in out


# ---- case 3: probe head with val classes absent from train ---------------------------


def test_probe_head_refuses_val_classes_absent_from_train(w, tmp_path):
    train = image_folder(tmp_path / "train", ["cat", "dog"], seed=4)
    code, out = run_cli("run-study", w["a"], w["b"], "--train", train, "--val", w["named"],
                        "--head", "probe", "-o", tmp_path / "s", "--cache", w["cache"], "-q")
    assert code == 2, out
    assert "val classes 'fish' have no training images" in out


def test_check_with_probes_refuses_val_classes_absent_from_train(w, tmp_path):
    train = image_folder(tmp_path / "train", ["cat", "dog"], seed=4)
    other = tiny_classifier(tmp_path / "five.onnx", 5, 3)  # another output space: probes
    code, out = _check(w, w["a"], other, "--val", w["named"], "--train", train)
    assert code == 2 and "'fish'" in out and "--head probe" in out, out


# ---- case 4: default gates that cannot be measured are noted --------------------------


def test_unlabeled_val_with_train_notes_the_loss_gate(w):
    code, out = _check(w, w["a"], w["a"], "--val", f"unlabeled:{w['named']}",
                       "--train", w["numeric_train"])
    assert "note: default gate max_loss (loss_*) skipped: --val has no labels" in out, out
    assert "note: default gate max_acc_drop (acc_drop) skipped: --val has no labels" in out
    assert code == 0, out  # top1_agreement was measured and passed


def test_different_output_spaces_note_the_agreement_gate(w, tmp_path):
    other = tiny_classifier(tmp_path / "five.onnx", 5, 3)
    code, out = _check(w, w["a"], other, "--val", w["numeric"], "--train", w["numeric_train"])
    assert "default gate min_agreement (top1_agreement) skipped: the two models do not " \
        "share an output space" in out, out


# ---- case 5: train and val overlap -----------------------------------------------------


def test_overlap_by_content(tmp_path, w):
    copy = tmp_path / "copy"
    shutil.copytree(w["numeric"], copy)
    partial = image_folder(tmp_path / "partial", ["0", "1", "2"], seed=21)
    shutil.copy(w["numeric"] / "1" / "img2.png", partial / "1" / "shared_a.png")
    shutil.copy(w["numeric"] / "2" / "img0.png", partial / "0" / "shared_b.png")
    val = open_dataset(w["numeric"])
    assert shared_samples(open_dataset(w["numeric"]), val)[0] == 12  # the same folder
    assert shared_samples(open_dataset(copy), val)[0] == 12  # a copy
    assert shared_samples(open_dataset(w["numeric_train"]), val)[0] == 0  # distinct images
    count, examples = shared_samples(open_dataset(partial), val)
    assert count == 2 and set(examples) == {"1/img2.png", "2/img0.png"}
    # same size and same first 4 KiB, different tail: not the same image
    (tmp_path / "u1").mkdir()
    (tmp_path / "u2").mkdir()
    (tmp_path / "u1" / "x.png").write_bytes(b"\0" * 5000 + b"a")
    (tmp_path / "u2" / "x.png").write_bytes(b"\0" * 5000 + b"b")
    (tmp_path / "u2" / "y.png").write_bytes(b"\0" * 5000 + b"a")
    assert shared_samples(open_dataset(tmp_path / "u1"), open_dataset(tmp_path / "u2")) \
        == (1, ["y.png"])
    x = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    npz = tmp_path / "a.npz"
    np.savez(npz, images=x, labels=np.arange(6) % 3)
    assert shared_samples(open_dataset(npz), open_dataset(npz))[0] == 6  # the same file
    assert shared_samples(open_dataset(npz), open_dataset(npz).subset([0, 5]))[0] == 2


def test_check_warns_about_overlap_and_strict_refuses(w, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(w["numeric"], copy)
    report = tmp_path / "check.json"
    code, out = _check(w, w["a"], w["b"], "--val", w["numeric"], "--train", copy,
                       "--json", report, "--solver", "lstsq")
    assert code in (0, 1), out
    assert "train and val share 12 images by content (100.0% of val" in out
    notes = json.loads(report.read_text())["notes"]
    assert any("share 12 images" in n for n in notes)
    code, out = _check(w, w["a"], w["b"], "--val", w["numeric"], "--train", copy, "--strict")
    assert code == 2 and "--strict refuses this" in out, out


# ---- case 6: assumptions and conversions are recorded and shown ----------------------


def _odd_images(root):
    """A folder whose images need conversions: palette, CMYK, EXIF-rotated, 16-bit."""
    from PIL import Image

    rng = np.random.default_rng(5)
    for cls in ("0", "1"):
        (root / cls).mkdir(parents=True)
        for j in range(2):
            Image.fromarray(rng.integers(0, 40, (8, 8), dtype=np.uint8)).save(
                root / cls / f"plain{j}.png")
    Image.fromarray(rng.integers(0, 40, (8, 8, 3), dtype=np.uint8)).convert("P").save(
        root / "0" / "palette.png")
    Image.fromarray(rng.integers(0, 40, (8, 8, 3), dtype=np.uint8)).convert("CMYK").save(
        root / "0" / "cmyk.jpg")
    img = Image.fromarray(rng.integers(0, 40, (8, 8, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(root / "1" / "rotated.jpg", exif=exif)
    Image.fromarray(rng.integers(0, 9000, (8, 8)).astype(np.uint16)).save(root / "1" / "deep.png")
    return root


def test_assumptions_and_conversions_are_recorded_shown_and_printed_once(w, tmp_path):
    bare_a = tiny_classifier(tmp_path / "bare_a.onnx", 3, 0, preprocess=None)
    bare_b = tiny_classifier(tmp_path / "bare_b.onnx", 3, 1, preprocess=None)
    val = _odd_images(tmp_path / "odd")
    out_dir = tmp_path / "study"
    code, out = run_cli("run-study", bare_a, bare_b, "--train", w["numeric_train"], "--val", val,
                        "-o", out_dir, "--cache", tmp_path / "cache", "--solver", "lstsq",
                        "--bootstrap", "20", "-q")
    assert code == 0, out
    conv = ("val images converted while decoding: CMYK -> RGB: 1, EXIF rotation applied: 1, "
            "I;16 -> L: 1, P -> RGB: 1")
    assert out.count(conv) == 1, out
    assert out.count("bare_a: ") == 1 and "assum" in out.lower()
    report = json.loads((out_dir / "report.json").read_text())
    assert conv in report["notes"]
    assert any(n.startswith("bare_a: ") for n in report["notes"])
    assert conv in (out_dir / "report.md").read_text()
    manifests = list((tmp_path / "cache").rglob("manifest.json"))
    recorded = [json.loads(p.read_text()) for p in manifests]
    assert any(m.get("conversions", {}).get("CMYK -> RGB") == 1 for m in recorded)
    assert all(m.get("preprocess_notes") for m in recorded)
    # a second run reuses the stores and still reports what they record
    code, out = run_cli("run-study", bare_a, bare_b, "--train", w["numeric_train"], "--val", val,
                        "-o", tmp_path / "again", "--cache", tmp_path / "cache", "--solver",
                        "lstsq", "--bootstrap", "20", "-q")
    assert code == 0 and out.count(conv) == 1, out


# ---- case 14: a CPU gate on a float16 candidate says what it cannot show -------------


def test_fp16_candidate_on_cpu_is_noted(w, tmp_path):
    fp16 = tiny_classifier(tmp_path / "half.onnx", 3, 0, fp16=True)
    code, out = _check(w, w["a"], fp16, "--val", w["numeric"], "--device", "cpu")
    assert "candidate (half.onnx) computes in float16" in out, out
    assert "CPU provider" in out and "float16 overflow" in out and "--device cuda" in out
    code, out = _check(w, w["a"], w["b"], "--val", w["numeric"])
    assert "float16" not in out


@pytest.mark.gpu
def test_fp16_candidate_on_cuda_runs_on_the_gpu(w, tmp_path):
    from xnetmap.runtime import resolve_device

    try:
        resolve_device("cuda")
    except Exception:
        pytest.skip("no CUDA provider")
    fp16 = tiny_classifier(tmp_path / "half.onnx", 3, 0, fp16=True)
    code, out = _check(w, w["a"], fp16, "--val", w["numeric"], "--device", "cuda")
    assert code in (0, 1) and "CPU provider" not in out, out


def test_extract_takes_a_class_index(w, tmp_path):
    index = tmp_path / "classes.txt"
    index.write_text("cat 281\ndog 207\nfish 1\n")
    code, out = run_cli("extract", w["wide_a"], w["named"], "-o", tmp_path / "store",
                        "--class-index", index, "-q")
    assert code == 0, out
    labels = np.load(tmp_path / "store" / "labels.npy")
    assert sorted(set(labels.tolist())) == [1, 207, 281]
