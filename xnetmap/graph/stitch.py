"""Stitch F_A → M_{A→B} → C_B into one ONNX model.

The stitched graph takes model A's input, computes A's features, applies the
affine map as one ``Gemm`` (``features_B = features_A @ W.T + b``) and runs model
B's classifier, so a user can deploy or inspect the mapped network. Its outputs
are B's classifier outputs, with B's names.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelRejected, UsageError

FEATURES = "features"
_MAPPED = "xnetmap_mapped_features"


def _default_opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ModelRejected(f"model {model.graph.name!r} imports no default-domain opset")


def _to_opset(model, version: int, label: str):
    from onnx import version_converter

    if _default_opset(model) == version:
        return model
    try:
        return version_converter.convert_version(model, version)
    except Exception as err:  # the converter raises bare RuntimeErrors
        raise ModelRejected(
            f"{label}: cannot convert from opset {_default_opset(model)} to {version} "
            f"to stitch it with the other model ({err}); re-export both with the same opset"
        ) from err


def stitch_graphs(
    features_a,
    W: np.ndarray,
    b: np.ndarray,
    classifier_b,
    *,
    name: str = "",
    norm: dict | None = None,
):
    """Build the ModelProto F_A → Gemm(W, b) → C_B.

    With ``norm`` (a map calibrated with ``--calibrate norm``: keys ``norm_w``
    (d_in,), ``norm_b``, ``eps``) each mapped row is rescaled to the length
    ``max(a · norm_w + norm_b, 0)`` predicted from the source features ``a``,
    exactly as :meth:`xnetmap.fit.AffineMap.transform` does.

    Parameters
    ----------
    features_a : onnx.ModelProto
        A's feature extractor, one output named ``features`` of shape [N, d_in].
    W : ndarray of shape (d_out, d_in)
    b : ndarray of shape (d_out,)
    classifier_b : onnx.ModelProto
        B's classifier, one input named ``features`` of shape [N, d_out].
    """
    from onnx import helper

    W, b = _check_map(W, b)
    _check_parts(features_a, classifier_b)
    opset = max(_default_opset(features_a), _default_opset(classifier_b))
    fa = _prefixed(_to_opset(features_a, opset, "model A's feature extractor"), "a/")
    cb = _prefixed(_to_opset(classifier_b, opset, "model B's classifier"), "b/")
    map_nodes, map_inits = _map_nodes(fa, cb, W, b, norm, opset)
    nodes = list(fa.graph.node) + map_nodes
    for node in cb.graph.node:  # C_B's input 'features' becomes the map's output
        node.input[:] = ["b_features_in" if x == FEATURES else x for x in node.input]
        nodes.append(node)
    graph = helper.make_graph(
        nodes,
        name or f"{features_a.graph.name}_to_{classifier_b.graph.name}",
        list(fa.graph.input),
        list(cb.graph.output),
        initializer=list(fa.graph.initializer) + list(cb.graph.initializer) + map_inits,
        value_info=list(fa.graph.value_info) + list(cb.graph.value_info),
    )
    graph.sparse_initializer.extend(
        list(fa.graph.sparse_initializer) + list(cb.graph.sparse_initializer)
    )
    model = helper.make_model(graph, opset_imports=_merged_opsets(fa, cb), producer_name="xnetmap")
    model.ir_version = max(fa.ir_version, cb.ir_version)
    # B's metadata (labels) describes the stitched outputs; A's preprocessing describes its input.
    meta = {p.key: p.value for p in classifier_b.metadata_props}
    meta.update(
        {p.key: p.value for p in features_a.metadata_props if p.key == "xnetmap.preprocess"}
    )
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    return model


def _check_map(W, b) -> tuple[np.ndarray, np.ndarray]:
    W = np.asarray(W, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32).reshape(-1)
    if W.ndim != 2 or b.shape[0] != W.shape[0]:
        raise UsageError(
            f"map has W of shape {W.shape} and b of shape {b.shape}: "
            "expected (d_out, d_in) and (d_out,)"
        )
    return W, b


def _check_parts(features_a, classifier_b) -> None:
    f_out = [o.name for o in features_a.graph.output]
    c_in = [i.name for i in classifier_b.graph.input]
    if f_out != [FEATURES] or c_in != [FEATURES]:
        raise ModelRejected(
            f"stitch expects xnetmap split parts: F with output 'features' (got {f_out}) "
            f"and C with input 'features' (got {c_in}); run `xnetmap split` first"
        )


def _prefixed(model, prefix: str):
    import onnx

    return onnx.compose.add_prefix(model, prefix, rename_inputs=False, rename_outputs=False)


def _merged_opsets(fa, cb) -> list:
    from onnx import helper

    opsets: dict[str, int] = {}
    for m in (fa, cb):
        for imp in m.opset_import:
            dom = "" if imp.domain == "ai.onnx" else imp.domain
            opsets[dom] = max(opsets.get(dom, 0), int(imp.version))
    return [helper.make_opsetid(d, v) for d, v in sorted(opsets.items())]


def _map_nodes(fa, cb, W, b, norm: dict | None, opset: int) -> tuple[list, list]:
    """Nodes and initializers from A's ``features`` to ``b_features_in``: the Gemm in
    float32 (fp16 features are cast around it), then the optional norm calibration."""
    import onnx
    from onnx import helper, numpy_helper

    nodes, src = [], FEATURES
    if fa.graph.output[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        nodes.append(
            helper.make_node("Cast", [src], ["xnetmap_features_f32"], to=onnx.TensorProto.FLOAT)
        )
        src = "xnetmap_features_f32"
    nodes.append(
        helper.make_node("Gemm", [src, "xnetmap_map_W", "xnetmap_map_b"], [_MAPPED], transB=1)
    )
    inits = [
        numpy_helper.from_array(W, "xnetmap_map_W"),
        numpy_helper.from_array(b, "xnetmap_map_b"),
    ]
    mapped = _MAPPED
    if norm is not None:
        norm_nodes, norm_inits = _norm_nodes(src, norm, opset)
        nodes += norm_nodes
        inits += norm_inits
        mapped = "xnetmap_mapped_norm"
    cb_dtype = cb.graph.input[0].type.tensor_type.elem_type
    if cb_dtype != onnx.TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [mapped], ["xnetmap_mapped_cast"], to=cb_dtype))
        mapped = "xnetmap_mapped_cast"
    nodes.append(helper.make_node("Identity", [mapped], ["b_features_in"]))
    return nodes, inits


def _norm_nodes(src: str, norm: dict, opset: int) -> tuple[list, list]:
    """Rescale each mapped row to the length ``max(a · norm_w + norm_b, 0)``."""
    from onnx import helper, numpy_helper

    w = np.asarray(norm["norm_w"], np.float32).reshape(-1, 1)
    inits = [
        numpy_helper.from_array(w, "xnetmap_norm_w"),
        numpy_helper.from_array(np.asarray([norm["norm_b"]], np.float32), "xnetmap_norm_b"),
        numpy_helper.from_array(
            np.asarray([norm.get("eps", 1e-12)], np.float32), "xnetmap_norm_eps"
        ),
    ]
    if opset >= 18:  # ReduceL2 takes its axes as an input from opset 18 on
        inits.append(numpy_helper.from_array(np.asarray([1], np.int64), "xnetmap_axis1"))
        reduce = helper.make_node(
            "ReduceL2", [_MAPPED, "xnetmap_axis1"], ["xnetmap_ny_raw"], keepdims=1
        )
    else:
        reduce = helper.make_node("ReduceL2", [_MAPPED], ["xnetmap_ny_raw"], axes=[1], keepdims=1)
    nodes = [
        helper.make_node("MatMul", [src, "xnetmap_norm_w"], ["xnetmap_len_raw"]),
        helper.make_node("Add", ["xnetmap_len_raw", "xnetmap_norm_b"], ["xnetmap_len_aff"]),
        helper.make_node("Relu", ["xnetmap_len_aff"], ["xnetmap_len"]),
        reduce,
        helper.make_node("Max", ["xnetmap_ny_raw", "xnetmap_norm_eps"], ["xnetmap_ny"]),
        helper.make_node("Div", ["xnetmap_len", "xnetmap_ny"], ["xnetmap_ratio"]),
        helper.make_node("Mul", [_MAPPED, "xnetmap_ratio"], ["xnetmap_mapped_norm"]),
    ]
    return nodes, inits
