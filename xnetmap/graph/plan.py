"""Plan a split: which tensor to cut, its width, and which outputs C can produce.

Reads the protobuf through :class:`GraphIndex` (head detection, shape inference);
the cut itself is made by :mod:`xnetmap.graph.surgery`.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..errors import ModelRejected, UsageError
from .certificate import cpu_session_from_bytes, input_spec, random_inputs
from .external_data import is_external, iter_model_tensors
from .heads import Head, cut_candidates, detect_head
from .index import GraphIndex, feature_width
from .surgery import reachable_nodes, truncated_model

DEFINITIONS = ("pooled", "penultimate")


@dataclass(frozen=True)
class SplitPlan:
    """Where to cut a model and what each part carries.

    Attributes
    ----------
    cut_tensor : str
    cut_shape : list
        Shape of the cut tensor (batch dim first).
    feature_dim : int
        D, the product of the non-batch dims of ``cut_shape``.
    cut_type : int
        ONNX element type of the cut tensor.
    logits_name : str
    outputs : list of str
        Outputs C produces (those that depend on the input only through the cut).
    dropped : list of str
        Outputs C cannot produce (e.g. auxiliary logits branching off before the cut).
    head : Head or None
    rewrites : dict
        Node index -> replacement node C uses (see ``heads._batch_flatten``).
    """

    cut_tensor: str
    cut_shape: list
    feature_dim: int
    cut_type: int
    logits_name: str
    outputs: list[str]
    dropped: list[str]
    head: Head | None
    rewrites: dict


def candidate_text(ix: GraphIndex) -> str:
    return ", ".join(f"{name} {shape}" for name, shape in cut_candidates(ix))


def resolve_cut(ix: GraphIndex, cut: str, name: str) -> tuple[str, Head | None]:
    """The cut tensor for a definition (pooled, penultimate) or a tensor name, and the
    detected head (None when a tensor was named and no head is detectable)."""
    if cut in DEFINITIONS:
        head = detect_head(ix, name)
        return head.cut_tensor(cut), head
    try:
        head = detect_head(ix, name)
    except ModelRejected:
        head = None
    if cut not in ix.producer or ix.is_const(cut):
        what = "a graph input" if cut in ix.graph_inputs else "not a computed tensor"
        if cut not in ix.graph_inputs and cut not in ix.initializers:
            what = "not a tensor of this model"
        raise UsageError(
            f"--cut {cut!r} is {what}; use pooled, penultimate or one of: "
            f"{candidate_text(ix)} (`xnetmap inspect {name}` lists more)"
        )
    if cut in {o.name for o in ix.model.graph.output}:
        raise UsageError(f"--cut {cut!r} is a model output; cut before the logits")
    return cut, head


def _cut_shape(ix: GraphIndex, tensor: str, name: str) -> tuple[list, int]:
    shape = ix.shape(tensor)
    width = feature_width(shape)
    if width is None:
        shape = probe_shape(ix, tensor)
        width = feature_width(shape)
    if width is None:
        raise ModelRejected(
            f"{name}: the shape of cut tensor {tensor!r} is unknown after shape inference "
            f"({shape}); choose another --cut (`xnetmap inspect {name}` shows shapes)"
        )
    return list(shape), width


def plan_split(ix: GraphIndex, cut: str, name: str) -> SplitPlan:
    """Resolve the cut tensor, its shape, and which outputs C can produce."""
    cut_tensor, head = resolve_cut(ix, cut, name)
    shape, width = _cut_shape(ix, cut_tensor, name)
    rewrites = head.rewrites if head is not None else {}
    kept, dropped = [], []
    for out in ix.model.graph.output:
        _, leaves = reachable_nodes(ix, [out.name], {cut_tensor}, rewrites)
        (kept if leaves <= {cut_tensor} and leaves else dropped).append(out.name)
    logits = head.logits_name if head is not None else None
    if logits is None or logits not in kept:
        if not kept:
            raise UsageError(
                f"--cut {cut_tensor!r} does not separate the input from any output: every "
                f"output also depends on tensors before it (skip connections?); choose a tensor "
                f"all outputs flow through, e.g. {candidate_text(ix)}"
            )
        logits = kept[0]
    cut_type = ix.types.get(cut_tensor, onnx.TensorProto.FLOAT)
    return SplitPlan(cut_tensor, shape, width, cut_type, logits, kept, dropped, head, rewrites)


def probe_shape(ix: GraphIndex, tensor: str) -> list | None:
    """The shape of ``tensor`` measured with onnxruntime on two random inputs, for
    when shape inference cannot tell. Only for models held in memory (no
    external data); returns None otherwise or when the run fails."""

    model = ix.model
    if any(is_external(t) for t in iter_model_tensors(model)) or len(ix.graph_inputs) != 1:
        return None
    try:
        probe = truncated_model(model, tensor, ix.types.get(tensor, onnx.TensorProto.FLOAT))
        if probe.graph.output[0].type.tensor_type.HasField("shape"):
            onnx.checker.check_model(probe)  # else: a node subset of a checked model
        session = cpu_session_from_bytes(probe.SerializeToString())
        dtype, dims = input_spec(model, ix.graph_inputs[0])
        X, _ = random_inputs(dtype, dims, 2)
        (value,) = session.run([tensor], {ix.graph_inputs[0]: X})
    except Exception:  # noqa: BLE001 - the caller reports the unknown shape
        return None
    batch = ix.shape(ix.graph_inputs[0])
    return [batch[0] if batch else "N", *[int(d) for d in value.shape[1:]]]
