"""Tiny ONNX classifiers and image folders for the issue-11 tests (built here, never downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: 8x8 greyscale, pixels 0..255 as they are (scale 1, mean 0, std 1).
PRE = {"version": 1, "size": [8, 8], "resize": None, "crop": "none",
       "interpolation": "bilinear", "colour": "L", "channel_order": "RGB", "layout": "NCHW",
       "scale": 1.0, "mean": [0.0], "std": [1.0]}


def tiny_classifier(path: Path, classes: int = 3, seed: int = 0, *, nan_above: float | None = None,
                    labels: list[str] | None = None, fp16: bool = False,
                    preprocess: dict | None = PRE) -> Path:
    """Conv(1->4) + Relu + GlobalAveragePool + Flatten (+ one more feature) + Gemm -> logits.

    ``nan_above``: one feature is sqrt(nan_above - mean pixel): finite on the split
    certificate's standard-normal inputs, NaN on images brighter than ``nan_above``.
    ``fp16``: the input goes through a float16 Cast (as converters leave it).
    ``preprocess=None``: no ``xnetmap.preprocess`` metadata (it is then assumed).
    """
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.05, (4, 1, 3, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "B")]
    nodes, x = [], "input"
    if fp16:
        nodes += [helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16),
                  helper.make_node("Cast", ["x16"], ["x32"], to=TensorProto.FLOAT)]
        x = "x32"
    nodes += [helper.make_node("Conv", [x, "W", "B"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("GlobalAveragePool", ["r"], ["g"]),
              helper.make_node("Flatten", ["g"], ["conv_feat"], axis=1)]
    width = 4
    pooled = "conv_feat"
    if nan_above is not None:
        inits.append(numpy_helper.from_array(np.array([nan_above], np.float32), "limit"))
        nodes += [helper.make_node("GlobalAveragePool", [x], ["m4"]),
                  helper.make_node("Flatten", ["m4"], ["m"], axis=1),
                  helper.make_node("Sub", ["limit", "m"], ["room"]),
                  helper.make_node("Sqrt", ["room"], ["s"]),
                  helper.make_node("Concat", ["conv_feat", "s"], ["pooled"], axis=1)]
        width, pooled = 5, "pooled"
    inits += [numpy_helper.from_array(rng.normal(0, 0.5, (classes, width)).astype(np.float32),
                                      "Wfc"),
              numpy_helper.from_array(rng.normal(0, 0.1, (classes,)).astype(np.float32), "bfc")]
    nodes.append(helper.make_node("Gemm", [pooled, "Wfc", "bfc"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "tiny_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {}
    if preprocess is not None:
        props["xnetmap.preprocess"] = json.dumps(preprocess)
    if labels is not None:
        props["xnetmap.labels"] = json.dumps(labels)
    if props:
        helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def image_folder(root: Path, classes, per_class: int = 4, seed: int = 0,
                 bright: float = 0.0) -> Path:
    """``root/<class>/img<j>.png``: distinct 8x8 greyscale PNGs.

    A fraction ``bright`` of each class's images have pixels 200..255 (mean over 50),
    the others 0..40.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            lo, hi = (200, 256) if j < round(bright * per_class) else (0, 41)
            Image.fromarray(rng.integers(lo, hi, (8, 8), dtype=np.uint8)).save(d / f"img{j}.png")
    return root
