"""Tiny ONNX feature extractors and image datasets for the extract tests (built here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FASHION_PREPROCESS = {
    "version": 1, "size": [28, 28], "resize": None, "crop": "none",
    "interpolation": "bilinear", "colour": "L", "channel_order": "RGB", "layout": "NCHW",
    "scale": 1 / 255, "mean": [0.2860], "std": [0.3530],
}


def _save(graph, path: Path, preprocess: dict) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"xnetmap.preprocess": json.dumps(preprocess)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_features_model(path: Path, channels: int = 8, seed: int = 0,
                        symbolic_dim: bool = False) -> Path:
    """Conv(1->channels, 3x3) + Relu + GlobalAveragePool + Flatten: [N,1,28,28] -> [N,channels].

    ``symbolic_dim``: declare the output as [N, D] (width unknown until run).
    """
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 0.5, (channels, 1, 3, 3)).astype(np.float32)
    B = rng.normal(0, 0.1, (channels,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["features"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_features",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                       ["N", "D" if symbolic_dim else channels])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    return _save(graph, path, FASHION_PREPROCESS)


def min_over_headroom_model(path: Path) -> Path:
    """features = min(x) / (255 - max(x)) * [1, 2, 3]: black image -> zero row, white -> inf.

    Preprocessing: scale 1, mean 0, std 1 (pixels 0..255, exact).
    """
    nodes = [
        helper.make_node("Flatten", ["input"], ["f"], axis=1),
        helper.make_node("ReduceMin", ["f"], ["lo"], axes=[1], keepdims=1),
        helper.make_node("ReduceMax", ["f"], ["hi"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["full", "hi"], ["room"]),
        helper.make_node("Div", ["lo", "room"], ["q"]),
        helper.make_node("Mul", ["q", "w"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes, "min_over_headroom",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.array([255.0], np.float32), "full"),
         numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "w")],
    )
    return _save(graph, path, {**FASHION_PREPROCESS, "scale": 1.0, "mean": [0.0], "std": [1.0]})


def smooth_images(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """``n`` smooth random uint8 images of shape (size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        a, b, c, d = rng.uniform(0, 6, 4)
        img = 127 + 60 * np.sin(a * xx + b) * np.cos(c * yy + d) + rng.normal(0, 20, (size, size))
        out[i] = np.clip(img, 10, 245).astype(np.uint8)
    return out


def write_idx_dataset(folder: Path, n: int, seed: int = 0) -> Path:
    """Fashion-MNIST-style IDX pair (images + labels); returns the images file."""
    from xnetmap.data.idx import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    images = smooth_images(n, seed=seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    path = folder / "train-images-idx3-ubyte"
    write_idx(path, images)
    write_idx(folder / "train-labels-idx1-ubyte", labels)
    return path


def write_folder_dataset(root: Path, n_per_class: int = 6, bad: bool = True) -> Path:
    """A class-folder dataset of 28x28 JPEG/PNG files, plus (optionally) two unreadable files.

    Bad files: ``b/bad_truncated.jpg`` (a JPEG cut in half) and ``a/bad_text.jpg``
    (a text file). Also ``a/black.png`` (all 0) and ``b/white.png`` (all 255).
    """
    from PIL import Image

    imgs = smooth_images(2 * n_per_class, seed=3)
    for c, cls in enumerate(["a", "b"]):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for j in range(n_per_class):
            Image.fromarray(imgs[c * n_per_class + j]).save(d / f"img{j:02d}.png")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / "a" / "black.png")
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(root / "b" / "white.png")
    if bad:
        (root / "a" / "bad_text.jpg").write_text("this is not an image\n")
        full = root / "b" / "tmp_full.jpg"
        Image.fromarray(imgs[0]).convert("RGB").resize((64, 64)).save(full, quality=95)
        data = full.read_bytes()
        full.unlink()
        (root / "b" / "bad_truncated.jpg").write_bytes(data[: len(data) // 2])
    return root


def conv_classifier_model(path: Path, classes: int = 3, seed: int = 0) -> Path:
    """Full classifier: the conv features net above + Gemm head -> ``logits`` [N, classes]."""
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32)
    B = rng.normal(0, 0.1, (8,)).astype(np.float32)
    Wfc = rng.normal(0, 0.5, (classes, 8)).astype(np.float32)
    bfc = rng.normal(0, 0.1, (classes,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["pooled"], axis=1),
        helper.make_node("Gemm", ["pooled", "Wfc", "bfc"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (B, "B"), (Wfc, "Wfc"),
                                                      (bfc, "bfc"))],
    )
    return _save(graph, path, FASHION_PREPROCESS)


def features_model_onnxruntime_rejects(path: Path) -> Path:
    """Passes xnetmap's loader (onnx.checker), but onnxruntime refuses it: float + int64 Add.

    What a node whose onnxruntime cannot open F sees; the output ``[N, 784]`` is
    declared, so the driver never opens F itself and only the workers find out.
    """
    nodes = [helper.make_node("Flatten", ["input"], ["f"], axis=1),
             helper.make_node("Add", ["f", "k"], ["features"])]
    graph = helper.make_graph(
        nodes, "rejected_features",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 784])],
        [numpy_helper.from_array(np.ones(784, dtype=np.int64), "k")])
    return _save(graph, path, FASHION_PREPROCESS)
