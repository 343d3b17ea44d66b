"""The bundled Fashion-MNIST zoo (models/*.onnx) and data (data/fashion-mnist).

Each model is checked as a file (size, opset, dynamic batch, metadata) and as a classifier:
top-1 on the first 2,000 test images, read and preprocessed by xnetmap.data from the model's
own metadata and run through onnxruntime, must match the accuracy recorded in the model card
(written by tools/export_zoo.py from an independent numpy preprocessing path) within 1.5 points.
"""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import onnx
import pytest
from zoo_data import DATA, MODELS, model_input, read_idx, run_onnx

ZOO = ["resnet_v2", "inception", "vgg", "mobilenet", "mixer"]
CONV = {"resnet_v2", "inception", "vgg", "mobilenet"}
SLICE = 2000
MAX_BYTES = 3 * 1024 * 1024
LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
PREPROCESS = {
    "version": 1, "size": [28, 28], "resize": None, "crop": "none",
    "interpolation": "bilinear", "colour": "L", "channel_order": "RGB", "layout": "NCHW",
    "scale": 1 / 255, "mean": [0.2860], "std": [0.3530],
}
CARD_KEYS = {"family", "params", "feature_dim", "epochs", "train_seconds", "ort_test_acc",
             "ort_slice_acc", "train_command"}


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def card(key: str) -> dict:
    return json.loads(metadata(onnx.load(str(MODELS / f"{key}.onnx")))["xnetmap.model_card"])


@pytest.fixture(scope="module")
def test_slice():
    """(X (2000, 1, 28, 28) float32 via xnetmap.data, labels (2000,), model path used)."""
    from xnetmap.data import open_dataset, preprocess_sample
    from xnetmap.graph import model_preprocess

    ds = open_dataset(DATA / "t10k-images-idx3-ubyte.gz").subset(range(SLICE))
    specs = {}
    for key in ZOO:
        spec, notes = model_preprocess(MODELS / f"{key}.onnx")
        assert notes == [], f"{key}: metadata incomplete, xnetmap assumed {notes}"
        specs[key] = spec
    # All five share one preprocessing, so the slice is decoded once.
    assert len({s.digest() for s in specs.values()}) == 1
    spec = specs[ZOO[0]]
    X = np.stack([preprocess_sample(ds, i, spec) for i in range(len(ds))])
    return X, ds.labels


@pytest.mark.parametrize("key", ZOO)
def test_file_opset_and_dynamic_batch(key):
    path = MODELS / f"{key}.onnx"
    assert path.stat().st_size <= MAX_BYTES, f"{path} is {path.stat().st_size} bytes"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    opset = {o.domain: o.version for o in model.opset_import}
    assert opset.get("", opset.get("ai.onnx", 0)) >= 17
    assert set(opset) <= {"", "ai.onnx"}, f"custom domains in {path}: {opset}"
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "image" and out.name == "logits"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["N", 1, 28, 28] and out_dims == ["N", 10]
    x = np.random.default_rng(0).standard_normal((7, 1, 28, 28)).astype(np.float32)
    seven = run_onnx(path, x)
    one = run_onnx(path, x[:1])
    assert seven.shape == (7, 10)
    np.testing.assert_allclose(one[0], seven[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("key", ZOO)
def test_metadata(key):
    meta = metadata(onnx.load(str(MODELS / f"{key}.onnx")))
    pre = json.loads(meta["xnetmap.preprocess"])
    assert pre.keys() == PREPROCESS.keys()
    for field, value in PREPROCESS.items():
        if isinstance(value, float):
            assert pre[field] == pytest.approx(value, rel=1e-12)
        else:
            assert pre[field] == value, field
    assert json.loads(meta["xnetmap.labels"]) == LABELS
    c = json.loads(meta["xnetmap.model_card"])
    assert CARD_KEYS <= c.keys()
    assert c["ort_test_acc"] >= (0.90 if key in CONV else 0.88)


def test_families_differ():
    cards = {key: card(key) for key in ZOO}
    assert len({c["feature_dim"] for c in cards.values()}) == len(ZOO)
    ops = {n.op_type for n in onnx.load(str(MODELS / "mixer.onnx")).graph.node}
    assert not ops & {"Conv", "ConvTranspose"}, "the non-convolutional model has a convolution"
    for key in CONV:
        ops = {n.op_type for n in onnx.load(str(MODELS / f"{key}.onnx")).graph.node}
        assert "Conv" in ops and "GlobalAveragePool" in ops, key


def test_xnetmap_preprocessing_matches_hand_path(test_slice):
    X, y = test_slice
    images = read_idx(DATA / "t10k-images-idx3-ubyte.gz")[:SLICE]
    labels = read_idx(DATA / "t10k-labels-idx1-ubyte.gz")[:SLICE]
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(X, model_input(images), rtol=0, atol=1e-5)


@pytest.mark.parametrize("key", ZOO)
def test_slice_accuracy_matches_model_card(key, test_slice):
    X, y = test_slice
    logits = run_onnx(MODELS / f"{key}.onnx", X)
    acc = float((logits.argmax(1) == y).mean())
    recorded = card(key)["ort_slice_acc"]
    assert abs(acc - recorded) <= 0.015, f"{key}: slice top-1 {acc:.4f}, card says {recorded}"
    assert acc >= (0.90 if key in CONV else 0.88) - 0.015


def test_bundled_data_matches_readme():
    """The bundled files are intact: sha256 as listed in data/fashion-mnist/README.md."""
    readme = (DATA / "README.md").read_text()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                 "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        digest = hashlib.sha256((DATA / name).read_bytes()).hexdigest()
        assert f"| `{name}` |" in readme and digest in readme, name
    head = gzip.open(DATA / "train-images-idx3-ubyte.gz").read(16)
    assert int.from_bytes(head[4:8], "big") == 20000
