"""Graph surgery with onnx-graphsurgeon: cut a model into F (input -> features) and
C (features -> outputs).

The graphsurgeon idiom throughout: import the model, set ``graph.inputs`` /
``graph.outputs`` to the cut tensors, ``cleanup().toposort()``, export. The model
is imported as loaded by :func:`xnetmap.graph.load_model` with
``load_external_data=False``: graphsurgeon keeps every initializer as a lazy
constant and exports its TensorProto unchanged, so a tensor stored as external
data stays a reference into the source model's folder (a model over 2 GB is
never held in memory) until :mod:`xnetmap.graph.save` moves it to a file xnetmap
names. The source ModelProto is never modified.

Export is deterministic: the same model and cut give the same bytes, which is
what lets :func:`xnetmap.graph.split_model` reuse a part on disk only when it is
byte-identical to a fresh split.
"""

from __future__ import annotations

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

    The planning step uses it to tell which outputs a cut separates from the input.

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


def _gs():
    import onnx_graphsurgeon as gs

    return gs


def _quiet():
    """graphsurgeon logs warnings (e.g. duplicate node names) to stdout; library code
    never prints, so its logger is silenced around every call (errors still raise)."""
    from onnx_graphsurgeon.logger import G_LOGGER

    return G_LOGGER.suppress()


def _import(model: onnx.ModelProto):
    with _quiet():
        return _gs().import_onnx(model)


def _scopes(graph) -> list:
    return [graph, *graph.subgraphs(recursive=True)]


def _unique(names: set[str], base: str) -> str:
    k = 0
    while f"{base}__xnetmap{k}" in names:
        k += 1
    return f"{base}__xnetmap{k}"


def _free_name(graph, name: str) -> set[str]:
    """Rename any tensor called ``name`` (in any scope) so the part can use it;
    returns every tensor name in the graph."""
    from onnx_graphsurgeon.ir.tensor import Constant, LazyValues

    scopes = [scope.tensors() for scope in _scopes(graph)]
    names = {n for tensors in scopes for n in tensors}
    for tensors in scopes:
        tensor = tensors.get(name)
        if tensor is None or tensor.name != name:
            continue  # absent, or already renamed through an outer scope
        if isinstance(tensor, Constant) and isinstance(tensor._values, LazyValues):
            # export writes the name into the lazy TensorProto: give it its own copy so
            # the caller's ModelProto keeps its names
            copied = onnx.TensorProto()
            copied.CopyFrom(tensor._values.tensor)
            tensor._values = LazyValues(copied)
        tensor.name = _unique(names, name)
        names.add(tensor.name)
    return names


def _batch_dim(graph):
    shape = graph.inputs[0].shape if graph.inputs else None
    if shape and isinstance(shape[0], (int, str)) and shape[0] not in (0, ""):
        return shape[0]
    return "N"


def _export(graph, src: onnx.ModelProto, part: str, sha256: str) -> onnx.ModelProto:
    """graphsurgeon's export, then the model-level fields it does not carry over."""
    graph.functions = []  # copied verbatim below, not re-exported
    with _quiet():
        model = _gs().export_onnx(graph, opset_imports=list(src.opset_import))
    model.ir_version = src.ir_version
    model.domain = src.domain
    model.model_version = src.model_version
    model.doc_string = src.doc_string
    model.functions.extend(src.functions)
    if src.ir_version < 4:  # IR 3 lists every initializer among the graph inputs
        model.graph.input.extend(
            helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
            for t in model.graph.initializer
        )
    for prop in src.metadata_props:
        if not prop.key.startswith("xnetmap.part") and prop.key != "xnetmap.source_sha256":
            model.metadata_props.add(key=prop.key, value=prop.value)
    model.metadata_props.add(key="xnetmap.part", value=part)
    model.metadata_props.add(key="xnetmap.source_sha256", value=sha256)
    return model


def _check_closed(graph, part: str) -> None:
    """Every tensor the part reads is an input, a constant or computed inside it."""
    gs = _gs()
    inputs = {t.name for t in graph.inputs}
    stray = sorted(
        t.name
        for t in graph.tensors().values()
        if isinstance(t, gs.Variable)
        and not t.inputs
        and t.outputs
        and t.name
        and t.name not in inputs
    )
    if stray:
        raise InternalError(f"the {part} part reads tensors nobody produces: {stray}")


def features_part(
    model: onnx.ModelProto, cut: str, cut_rank: int, feature_dim: int, elem_type: int, sha256: str
) -> onnx.ModelProto:
    """F: the model's input -> ``features`` [N, D] (the cut tensor, flattened)."""
    gs = _gs()
    if any(vi.name == FEATURES for vi in model.graph.input):
        raise UsageError(
            "the model's input is named 'features', the name xnetmap reserves for F's output; "
            "rename the input (e.g. with onnx.compose.add_prefix) and split again"
        )
    graph = _import(model)
    cut_tensor = graph.tensors()[cut]
    _free_name(graph, FEATURES)
    features = gs.Variable(FEATURES, dtype=elem_type, shape=[_batch_dim(graph), feature_dim])
    if cut_rank == 2:
        node = gs.Node("Identity", "xnetmap_features", inputs=[cut_tensor], outputs=[features])
    else:
        node = gs.Node(
            "Flatten", "xnetmap_flatten", {"axis": 1}, inputs=[cut_tensor], outputs=[features]
        )
    graph.nodes.append(node)
    graph.outputs = [features]
    graph.name = "xnetmap_features"
    graph.cleanup(recurse_functions=False).toposort(recurse_functions=False)
    _check_closed(graph, "features")
    return _export(graph, model, "features", sha256)


def _apply_rewrites(graph, rewrites: dict[int, onnx.NodeProto]) -> None:
    """Replace head nodes by the equivalent ones the head detection chose (see
    ``heads._batch_flatten``); graphsurgeon keeps the model's node order on import."""
    tensors = graph.tensors()
    for index, proto in rewrites.items():
        node = graph.nodes[index]
        if [t.name for t in node.outputs] != list(proto.output):
            raise InternalError(f"head rewrite {proto.name!r} does not match node {node.name!r}")
        node.op = proto.op_type
        node.domain = proto.domain or None
        node.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        node.inputs = [tensors[name] for name in proto.input]


def classifier_part(
    model: onnx.ModelProto,
    cut: str,
    cut_shape: list,
    feature_dim: int,
    elem_type: int,
    outputs: list[str],
    sha256: str,
    rewrites: dict[int, onnx.NodeProto] | None = None,
) -> onnx.ModelProto:
    """C: ``features`` [N, D] -> ``outputs`` (original names), restoring the cut's shape."""
    gs = _gs()
    if FEATURES in outputs:
        raise UsageError(
            "the model has an output named 'features', the name xnetmap reserves for C's input; "
            "rename that output and split again"
        )
    graph = _import(model)
    _apply_rewrites(graph, rewrites or {})
    tensors = graph.tensors()
    cut_tensor, kept = tensors[cut], [tensors[name] for name in outputs]
    batch = _batch_dim(graph)
    names = _free_name(graph, FEATURES)
    cut_tensor.inputs.clear()  # detach the cut from everything upstream of it
    features = gs.Variable(FEATURES, dtype=elem_type, shape=[batch, feature_dim])
    if len(cut_shape) == 2:
        restore = gs.Node("Identity", "xnetmap_restore", inputs=[features], outputs=[cut_tensor])
    else:
        target = np.array([-1, *[int(d) for d in cut_shape[1:]]], dtype=np.int64)
        shape = gs.Constant(_unique(names, "xnetmap_cut_shape"), target)
        restore = gs.Node(
            "Reshape", "xnetmap_restore", inputs=[features, shape], outputs=[cut_tensor]
        )
    graph.nodes.insert(0, restore)
    graph.inputs = [features]
    graph.outputs = kept
    graph.name = "xnetmap_classifier"
    graph.cleanup(recurse_functions=False).toposort(recurse_functions=False)
    _check_closed(graph, "classifier")
    return _export(graph, model, "classifier", sha256)


def truncated_model(model: onnx.ModelProto, tensor: str, elem_type: int) -> onnx.ModelProto:
    """The model cut after ``tensor``: its input -> ``tensor`` (for measuring a shape)."""
    graph = _import(model)
    target = graph.tensors()[tensor]
    if target.dtype is None:
        target.dtype = elem_type
    graph.outputs = [target]
    graph.cleanup(recurse_functions=False).toposort(recurse_functions=False)
    return _export(graph, model, "probe", "")
