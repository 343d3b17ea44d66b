"""run-study end to end on a slice of the bundled Fashion-MNIST, through the real CLI.

Every number in Table 1 is recomputed here independently: the full original
models and the split parts run directly in onnxruntime on inputs preprocessed
by hand, the map applied with NumPy from the map file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from cli_run import run_cli
from zoo_data import MODELS, fashion, model_input, run_onnx, write_npz

A, B = MODELS / "resnet_v2.onnx", MODELS / "inception.onnx"
N_TRAIN, N_VAL = 1500, 600



@dataclass
class Result:
    exit_code: int
    output: str


def _run(args) -> Result:
    return Result(*run_cli(*args))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("slices")
    xt, yt = fashion("train", N_TRAIN)
    xv, yv = fashion("test", N_VAL)
    return {
        "train": write_npz(root / "train.npz", xt, yt),
        "val": write_npz(root / "val.npz", xv, yv),
        "val_unlabeled": write_npz(root / "val_nolabels.npz", xv),
        "xv": xv,
        "yv": yv,
        "root": root,
    }


@pytest.fixture(scope="module")
def study(data):
    out = data["root"] / "study"
    args = ["run-study", A, B, "--train", data["train"], "--val", data["val"], "-o", out,
            "--cache", out / "cache"]
    res = _run([*args, "--epochs", "8", "--bootstrap", "200", "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    return {"out": out, "args": args, "report": report, "stdout": res.output}


def _pair(report, source, target):
    for p in report["pairs"]:
        if p["source"] == source and p["target"] == target:
            return p
    raise AssertionError(f"no pair {source} -> {target} in {report['pairs']}")


def _model(report, name):
    return next(m for m in report["models"] if m["name"] == name)


def test_table1_native_rows_match_the_original_models(study, data):
    x = model_input(data["xv"])
    for path in (A, B):
        logits = run_onnx(path, x)
        correct = int((logits.argmax(1) == data["yv"]).sum())
        m = _model(study["report"], path.stem)
        assert m["n"] == N_VAL
        assert m["correct"] == correct
    assert "resnet_v2 to inception" in study["stdout"]
    assert "R → I" in study["stdout"]


def test_table1_pair_rows_match_an_independent_recomputation(study, data):
    report = study["report"]
    x = model_input(data["xv"])
    cache = study["out"] / "cache" / "splits"
    for src, tgt in ((A, B), (B, A)):
        pair = _pair(report, src.stem, tgt.stem)
        features = run_onnx(next(cache.glob(f"{src.stem}-*/{src.stem}.features.onnx")), x)
        clf = next(cache.glob(f"{tgt.stem}-*/{tgt.stem}.classifier.onnx"))
        with np.load(pair["map_path"], allow_pickle=False) as z:
            W, b = z["W"], z["b"]
        mapped = features @ W.T + b
        logits = run_onnx(clf, mapped.astype(np.float32))
        correct = int((logits.argmax(1) == data["yv"]).sum())
        native = int((run_onnx(tgt, x).argmax(1) == data["yv"]).sum())
        assert pair["correct"] == correct
        assert pair["native_correct"] == native
        # Loss_{B,A} = Acc(C_B(F_B)) - Acc(C_B(M F_A)), in points.
        assert pair["loss"] == pytest.approx(100.0 * (native - correct) / N_VAL)
        lo, hi = pair["loss_ci"]
        assert lo <= pair["loss"] <= hi
        agree = (logits.argmax(1) == run_onnx(tgt, x).argmax(1)).mean()
        assert pair["agreement"] == pytest.approx(agree)
        # Same-training-same-features on a toy scale: the maps lose little.
        assert pair["loss"] < 10.0
        assert 0.0 < pair["cka"] <= 1.0


def test_stitched_model_reproduces_the_study_number(study, data, tmp_path):
    pair = _pair(study["report"], A.stem, B.stem)
    out = tmp_path / "a_to_b.onnx"
    res = _run(["stitch", A, B, pair["map_path"], "-o", out])
    assert res.exit_code == 0, res.output
    logits = run_onnx(out, model_input(data["xv"]))
    assert int((logits.argmax(1) == data["yv"]).sum()) == pair["correct"]


def test_second_run_recomputes_nothing(study):
    cache = study["out"] / "cache"
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    res = _run([*study["args"], "--epochs", "8", "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert after == before
    assert "fit map" in res.output  # the progress lines still name each step


def test_reports_are_written(study):
    out = study["out"]
    md = (out / "report.md").read_text()
    assert "| Description | Mapping | Correct | Percent | Loss |" in md
    assert (out / "report.html").read_text().count("<img") >= 2
    assert (out / "results.csv").read_text().count("\n") >= 4
    assert study["report"]["schema"].startswith("xnetmap.study/")


def test_probe_head(data):
    out = data["root"] / "probe"
    res = _run(["run-study", A, B, "--train", data["train"], "--val", data["val"], "-o", out,
                "--head", "probe", "--epochs", "5", "--bootstrap", "50", "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["head"] == "probe"
    for m in report["models"]:
        assert m["correct"] / m["n"] > 0.75  # a linear probe on good features


def test_label_free_mode(data):
    out = data["root"] / "nolabels"
    res = _run(["run-study", A, B, "--train", data["train"], "--val", data["val_unlabeled"],
                "-o", out, "--epochs", "5", "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["labelled"] is False
    assert all(p["correct"] is None and p["agreement"] > 0.5 for p in report["pairs"])
    assert "label-free" in (out / "report.md").read_text().lower()


def test_native_head_refuses_different_label_spaces(data, tmp_path):
    import onnx

    model = onnx.load(str(B))
    for prop in model.metadata_props:
        if prop.key == "xnetmap.labels":
            prop.value = json.dumps([f"class {i}" for i in range(10)])
    other = tmp_path / "relabelled.onnx"
    onnx.save(model, str(other))
    res = _run(["run-study", A, other, "--train", data["train"], "--val", data["val"],
                "-o", tmp_path / "s", "-q"])
    assert res.exit_code == 2
    assert "--head probe" in res.output


def test_missing_train_is_a_usage_error(data, tmp_path):
    res = _run(["run-study", A, B, "--val", data["val"], "-o", tmp_path / "s"])
    assert res.exit_code == 2
    assert "--train" in res.output


def test_map_and_probe_cache_keys_follow_the_cut():
    # The same model split at another tensor must not reuse a map fitted on the other features.
    from types import SimpleNamespace

    from xnetmap.study.maps import map_cache_key

    def store(features_sha, cut=None):
        return SimpleNamespace(manifest={
            "model_sha256": "m" * 64, "features_sha256": features_sha, "cut": cut,
            "dataset_fingerprint": "d" * 64, "preprocess_digest": "p" * 64})

    params = {"solver": "gd", "seed": 0}
    base = map_cache_key(store("a"), store("b"), params)
    assert base == map_cache_key(store("a"), store("b"), dict(params))
    assert base != map_cache_key(store("a2"), store("b"), params)
    assert base != map_cache_key(store("a"), store("b2"), params)
    assert base != map_cache_key(store("a", cut="/x"), store("b"), params)
    assert base != map_cache_key(store("a"), store("b"), {**params, "calibrate": "none"})


def test_stitch_refuses_a_map_fitted_for_other_models(study, tmp_path):
    # Same widths, other weights: the map's recorded target digest no longer matches B.
    import onnx

    pair = _pair(study["report"], A.stem, B.stem)
    model = onnx.load(str(B))
    model.doc_string = "retrained elsewhere"
    other = tmp_path / "other_b.onnx"
    onnx.save(model, str(other))
    res = _run(["stitch", A, other, pair["map_path"], "-o", tmp_path / "x.onnx"])
    assert res.exit_code == 2, res.output
    assert "different model B" in res.output and "--any-map" in res.output
    assert not (tmp_path / "x.onnx").exists()
    res = _run(["stitch", A, other, pair["map_path"], "-o", tmp_path / "x.onnx", "--any-map"])
    assert res.exit_code == 0, res.output


def test_val_class_names_are_aligned_to_the_models_label_order(study, data, tmp_path):
    # A dataset that numbers classes alphabetically (as a folder dataset does) must be
    # re-indexed to the models' xnetmap.labels order, not scored against the wrong ids.
    names = json.loads(_labels_of(A))
    alpha = sorted(names)
    y = np.array([alpha.index(names[c]) for c in data["yv"]])
    val = tmp_path / "val_alpha.npz"
    np.savez(val, images=data["xv"], labels=y, class_names=np.array(alpha))
    out = tmp_path / "alpha"
    res = _run([*study["args"][:5], "--val", val, "-o", out, "--cache", study["out"] / "cache",
                "--epochs", "8", "--bootstrap", "200", "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    for m in report["models"]:
        assert m["correct"] == _model(study["report"], m["name"])["correct"]
    assert report["settings"]["val_labels_reindexed"] is True
    bad = tmp_path / "val_bad.npz"
    np.savez(bad, images=data["xv"][:20], labels=np.arange(20) % 2,
             class_names=np.array(["Bag", "Boat"]))
    res = _run([*study["args"][:5], "--val", bad, "-o", tmp_path / "bad",
                "--cache", study["out"] / "cache", "-q"])
    assert res.exit_code == 2 and "'Boat'" in res.output


def _labels_of(path):
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(p.value for p in model.metadata_props if p.key == "xnetmap.labels")


def test_probe_head_refuses_val_classes_missing_from_train(data, tmp_path):
    # Train slice without class 9 ("Ankle boot"); val has it: a probe fitted on train can
    # never predict it, so the study refuses (issue 11, case 3) instead of scoring it wrong.
    xt, yt = fashion("train", N_TRAIN)
    keep = yt != 9
    train = write_npz(tmp_path / "train_no9.npz", xt[keep], yt[keep])
    out = tmp_path / "probe9"
    res = _run(["run-study", A, B, "--train", train, "--val", data["val"], "-o", out,
                "--head", "probe", "--epochs", "3", "--bootstrap", "20", "-q"])
    assert res.exit_code == 2, res.output
    assert "val classes '9' have no training images" in res.output
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [(["--names", "x,x"], "--names"),
                                            (["--bootstrap", "0"], "--bootstrap")])
def test_bad_settings_fail_before_any_work(data, tmp_path, extra, message):
    out = tmp_path / "s"
    res = _run(["run-study", A, B, "--train", data["train"], "--val", data["val"], "-o", out,
                "-q", *extra])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not out.exists()  # refused up front, not after extracting and fitting


def test_settings_table_lists_head_once(study):
    md = (study["out"] / "report.md").read_text()
    assert md.count("| head |") == 1


def test_stitched_norm_calibration_leaves_no_unused_initializer(study):
    # onnxruntime warns on every load about an initializer no node reads (opset < 18 ReduceL2).
    import onnx

    from xnetmap.graph.stitch import stitch_graphs

    splits = study["out"] / "cache" / "splits"
    fa = onnx.load(str(next(splits.glob("resnet_v2-*/resnet_v2.features.onnx"))))
    cb = onnx.load(str(next(splits.glob("inception-*/inception.classifier.onnx"))))
    d_in = fa.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    d_out = cb.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    W = np.zeros((d_out, d_in), np.float32)
    norm = {"norm_w": np.ones(d_in, np.float32), "norm_b": 0.0, "eps": 1e-12}
    model = stitch_graphs(fa, W, np.zeros(d_out, np.float32), cb, norm=norm)
    onnx.checker.check_model(model)
    used = {x for node in model.graph.node for x in node.input}
    assert [t.name for t in model.graph.initializer if t.name not in used] == []


def test_one_model_is_a_usage_error(data, tmp_path):
    res = _run(["run-study", A, "--train", data["train"], "--val", data["val"], "-o", tmp_path])
    assert res.exit_code == 2
    assert "at least two" in res.output
