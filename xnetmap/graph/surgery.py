"""Proto-level surgery: cut a model into F (input -> features) and C (features -> outputs).

Works on the ModelProto directly so that initializers stored as external data
stay references (a model over 2 GB is never serialised in memory); the parts
copy the referenced byte ranges in chunks (:mod:`xnetmap.graph.save`).
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper

from ..errors import InternalError, UsageError
from .index import GraphIndex, node_inputs

FEATURES = "features"


def reachable_nodes(
    ix: GraphIndex,
    targets: list[str],
    stop: set[str],
    rewrites: dict[int, onnx.NodeProto] | None = None,
) -> tuple[list[int], set[str]]:
    """Nodes needed to compute ``targets``, not looking past tensors in ``stop``.

    Returns
    -------
    nodes : list of int
        Node indices in topological order.
    leaves : set of str
        Non-constant tensors the nodes read that no included node produces
        (graph inputs, or ``stop`` tensors).
    """
    needed: set[int] = set()
    leaves: set[str] = set()
    stack = list(targets)
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in stop:
            leaves.add(t)
            continue
        p = ix.producer.get(t)
        if p is None:
            if t not in ix.initializers:
                leaves.add(t)
            continue
        if p not in needed:
            needed.add(p)
            node = (rewrites or {}).get(p, ix.nodes[p])
            stack.extend(node_inputs(node))
    return sorted(needed), leaves


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere in a graph, subgraphs included."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for attr in node.attribute:
            subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for sub in subs:
                _rename(sub, old, new)
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        if vi.name == old:
            vi.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new


def _unique(names: set[str], base: str) -> str:
    k = 0
    while f"{base}__xnetmap{k}" in names:
        k += 1
    return f"{base}__xnetmap{k}"


def _base_model(
    src: onnx.ModelProto, graph: onnx.GraphProto, part: str, sha256: str
) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=list(src.opset_import))
    model.ir_version = src.ir_version
    model.producer_name = src.producer_name
    model.producer_version = src.producer_version
    model.domain = src.domain
    model.model_version = src.model_version
    model.doc_string = src.doc_string
    model.functions.extend(src.functions)
    for prop in src.metadata_props:
        if not prop.key.startswith("xnetmap.part") and prop.key != "xnetmap.source_sha256":
            model.metadata_props.add(key=prop.key, value=prop.value)
    model.metadata_props.add(key="xnetmap.part", value=part)
    model.metadata_props.add(key="xnetmap.source_sha256", value=sha256)
    return model


def _collect(
    ix: GraphIndex,
    node_ids: list[int],
    graph: onnx.GraphProto,
    rewrites: dict[int, onnx.NodeProto] | None = None,
) -> None:
    """Copy nodes (or their rewrites), the initializers and value_info they use into ``graph``."""
    src = ix.model.graph
    nodes = [copy.deepcopy((rewrites or {}).get(i, ix.nodes[i])) for i in node_ids]
    graph.node.extend(nodes)
    used: set[str] = set()
    for node in nodes:
        used.update(node_inputs(node))
        used.update(node.output)
    graph.initializer.extend(t for t in src.initializer if t.name in used)
    graph.sparse_initializer.extend(s for s in src.sparse_initializer if s.values.name in used)
    io = {v.name for v in list(src.input) + list(src.output)}
    graph.value_info.extend(v for v in src.value_info if v.name in used and v.name not in io)


def _batch_dim(ix: GraphIndex, input_name: str):
    for vi in ix.model.graph.input:
        if vi.name == input_name:
            dims = vi.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value"):
                return int(dims[0].dim_value)
            if dims and dims[0].HasField("dim_param"):
                return dims[0].dim_param
    return "N"


def build_features_part(
    ix: GraphIndex,
    cut: str,
    cut_shape: list | None,
    feature_dim: int | None,
    elem_type: int,
    sha256: str,
) -> onnx.ModelProto:
    """F: the model's input(s) -> ``features`` [N, D] (the cut tensor, flattened)."""
    src = ix.model.graph
    node_ids, leaves = reachable_nodes(ix, [cut], set())
    read = {name for i in node_ids for name in node_inputs(ix.nodes[i])}
    # IR < 4 models list initializers among the inputs; keep those the part reads
    inputs = [vi for vi in src.input if vi.name in leaves or vi.name in read]
    missing = leaves - {vi.name for vi in src.input}
    if missing:
        raise InternalError(f"features part reads tensors nobody produces: {sorted(missing)}")
    graph = helper.make_graph([], "xnetmap_features", [], [])
    graph.input.extend(copy.deepcopy(inputs))
    _collect(ix, node_ids, graph)
    names = {n for node in graph.node for n in list(node.input) + list(node.output)}
    names |= {v.name for v in graph.input} | {t.name for t in graph.initializer}
    if any(vi.name == FEATURES for vi in graph.input):
        raise UsageError(
            "the model's input is named 'features', the name xnetmap reserves for F's output; "
            "rename the input (e.g. with onnx.compose.add_prefix) and split again"
        )
    if FEATURES in names:
        new = _unique(names, FEATURES)
        _rename(graph, FEATURES, new)
        if cut == FEATURES:
            cut = new
    if cut_shape is not None and len(cut_shape) == 2:
        graph.node.append(helper.make_node("Identity", [cut], [FEATURES], name="xnetmap_features"))
    else:
        graph.node.append(
            helper.make_node("Flatten", [cut], [FEATURES], name="xnetmap_flatten", axis=1)
        )
    batch = _batch_dim(ix, ix.graph_inputs[0]) if ix.graph_inputs else "N"
    graph.output.append(helper.make_tensor_value_info(FEATURES, elem_type, [batch, feature_dim]))
    return _base_model(ix.model, graph, "features", sha256)


def build_classifier_part(
    ix: GraphIndex,
    cut: str,
    cut_shape: list,
    feature_dim: int,
    elem_type: int,
    outputs: list[str],
    sha256: str,
    rewrites: dict[int, onnx.NodeProto] | None = None,
) -> onnx.ModelProto:
    """C: ``features`` [N, D] -> ``outputs`` (original names), restoring the cut's shape.

    ``rewrites`` replaces head nodes that read tensors before the cut by
    equivalent ones that do not (see ``heads._batch_flatten``).
    """
    src = ix.model.graph
    node_ids, leaves = reachable_nodes(ix, outputs, {cut}, rewrites)
    if leaves - {cut}:
        raise InternalError(f"classifier part reads tensors upstream of the cut: {sorted(leaves)}")
    graph = helper.make_graph([], "xnetmap_classifier", [], [])
    _collect(ix, node_ids, graph, rewrites)
    names = {n for node in graph.node for n in list(node.input) + list(node.output)}
    names |= {t.name for t in graph.initializer}
    if FEATURES in outputs:
        raise UsageError(
            "the model has an output named 'features', the name xnetmap reserves for C's input; "
            "rename that output and split again"
        )
    if FEATURES in names:
        new = _unique(names, FEATURES)
        _rename(graph, FEATURES, new)
        if cut == FEATURES:
            cut = new
    batch = _batch_dim(ix, ix.graph_inputs[0]) if ix.graph_inputs else "N"
    graph.input.append(helper.make_tensor_value_info(FEATURES, elem_type, [batch, feature_dim]))
    if len(cut_shape) == 2:
        restore = [helper.make_node("Identity", [FEATURES], [cut], name="xnetmap_restore")]
    else:
        shape_name = _unique(names, "xnetmap_cut_shape")
        target = np.array([-1, *[int(d) for d in cut_shape[1:]]], dtype=np.int64)
        graph.initializer.append(onnx.numpy_helper.from_array(target, shape_name))
        restore = [
            helper.make_node("Reshape", [FEATURES, shape_name], [cut], name="xnetmap_restore")
        ]
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(restore + nodes)
    for out in src.output:
        if out.name in outputs:
            graph.output.append(copy.deepcopy(out))
    return _base_model(ix.model, graph, "classifier", sha256)
