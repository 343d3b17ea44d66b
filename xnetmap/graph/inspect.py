"""``inspect_model``: what xnetmap sees in a model, as a JSON-able dict."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from ..errors import ModelRejected
from ..fsutil import file_sha256
from .heads import cut_candidates, detect_head
from .index import GraphIndex, feature_width
from .load import load_model


def _value_info(vi: onnx.ValueInfoProto) -> dict:
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
    except Exception:  # noqa: BLE001 - exotic element types
        dtype = onnx.TensorProto.DataType.Name(tt.elem_type)
    return {"name": vi.name, "shape": dims, "dtype": dtype}


def _parameter_count(model: onnx.ModelProto) -> int:
    total = 0
    for init in model.graph.initializer:
        count = 1
        for d in init.dims:
            count *= int(d)
        total += count
    return total


def inspect_model(path: str | Path) -> dict:
    """Describe a model: I/O, opsets, producer, parameters, head, cut candidates.

    Returns
    -------
    dict
        JSON-able. ``head`` is None (and ``head_error`` says why) when no
        classifier head is detected; ``cuts`` then lists only tensor candidates.
    """
    path = Path(path)
    model = load_model(path, load_external_data=False)
    ix = GraphIndex.build(model)
    init_names = ix.initializers
    info: dict = {
        "path": str(path),
        "sha256": file_sha256(path),
        "ir_version": model.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": len(model.graph.node),
        "parameters": _parameter_count(model),
        "inputs": [_value_info(v) for v in model.graph.input if v.name not in init_names],
        "outputs": [_value_info(v) for v in model.graph.output],
        "metadata": {p.key: p.value for p in model.metadata_props},
        "preprocess": None,
        "labels": None,
        "head": None,
        "head_error": None,
        "cuts": {},
        "candidates": [{"tensor": t, "shape": s} for t, s in cut_candidates(ix)],
    }
    meta = info["metadata"]
    if "xnetmap.preprocess" in meta:
        try:
            info["preprocess"] = json.loads(meta["xnetmap.preprocess"])
        except ValueError:
            info["preprocess"] = {"error": "xnetmap.preprocess is not valid JSON"}
    if "xnetmap.labels" in meta:
        try:
            info["labels"] = len(json.loads(meta["xnetmap.labels"]))
        except (ValueError, TypeError):
            info["labels"] = None
    try:
        head = detect_head(ix, str(path))
    except ModelRejected as err:
        info["head_error"] = err.message
        return info
    info["head"] = {
        "logits": head.logits_name,
        "affine_layers": head.affine_count,
        "chain": head.describe(ix),
    }
    for definition in ("pooled", "penultimate"):
        tensor = head.cut_tensor(definition)
        shape = ix.shape(tensor)
        info["cuts"][definition] = {"tensor": tensor, "shape": shape, "D": feature_width(shape)}
    return info
