"""Find the classifier head from graph structure and shapes (never from names).

The head is the trailing chain that ends in the logits. Walking back from a
graph output, each step accepts one node (or a small block of nodes) whose
data input is a *feature vector* (``[N, D]``, ``[N, D, 1, 1]``, ``[N, 1, 1, D]``,
``[N, 1, D]``) and whose other inputs are constants:

- affine layers: Gemm; MatMul (+ Add bias); a 1x1 Conv (group 1) on a 1x1 map;
- activations: Relu, LeakyRelu, PRelu, Elu, Selu, Sigmoid, Tanh, HardSigmoid,
  HardSwish, Gelu, Clip, Softplus, Mish, ... and blocks that compute one from a
  single tensor (GELU's Erf form, x*HardSigmoid(x), x*Sigmoid(x), ...);
- Dropout, Identity, Cast; Softmax / LogSoftmax;
- normalisation: BatchNormalization, LayerNormalization or its decomposition
  (ReduceMean/Sub/Pow/Sqrt/Div block), elementwise scale/shift by constants;
- Flatten, Squeeze, Unsqueeze, Transpose (NHWC graphs), Reshape with a constant
  shape or a shape computed by Shape/Gather/Unsqueeze/Concat from its own input.

The walk stops at the first node that is none of these (global pooling, a
class-token Gather/Slice, a Flatten of a spatial map, a convolution...). The
head needs at least one affine layer.

Choosing among several outputs (auxiliary logits, probabilities next to
logits): every output whose walk finds a head is a candidate; the main logits
are the candidate whose head starts *deepest* in the graph (its input tensor
is produced last in topological order), since auxiliary classifiers branch off
earlier layers. Ties (logits and softmax(logits) both exported) go to the
output without a trailing Softmax, then to the earlier output.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..errors import ModelRejected
from .index import GraphIndex, is_vector_like, subgraph_outer_inputs

SIMPLE_KINDS = {
    **dict.fromkeys(
        [
            "Relu",
            "LeakyRelu",
            "PRelu",
            "Elu",
            "Selu",
            "Celu",
            "Sigmoid",
            "Tanh",
            "HardSigmoid",
            "HardSwish",
            "Gelu",
            "Softplus",
            "Softsign",
            "Mish",
            "Erf",
            "Clip",
            "ThresholdedRelu",
        ],
        "activation",
    ),
    "Identity": "identity",
    "Dropout": "dropout",
    "Cast": "identity",
    "Softmax": "softmax",
    "LogSoftmax": "softmax",
    "Flatten": "reshape",
    "Reshape": "reshape",
    "Squeeze": "reshape",
    "Unsqueeze": "reshape",
    "Transpose": "reshape",
    "BatchNormalization": "norm",
    "LayerNormalization": "norm",
}
SCALE_OPS = {"Add", "Sub", "Mul", "Div"}
SHAPE_OPS = {
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Slice",
    "Mul",
    "Div",
    "Add",
    "Sub",
    "Identity",
    "ReduceProd",
    "Constant",
}
BLOCK_OPS = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "ReduceMean",
    "ReduceSum",
    "Erf",
    "HardSigmoid",
    "Sigmoid",
    "Tanh",
    "Relu",
    "Clip",
    "Neg",
    "Reciprocal",
    "Exp",
    "Log",
    "Abs",
    "Min",
    "Max",
    "Identity",
    "Cast",
    "Softplus",
    "Sum",
}
#: kinds that do not change the values of a feature vector
PASSIVE_KINDS = {"reshape", "identity", "dropout"}
MAX_BLOCK_NODES = 24


@dataclass(frozen=True)
class HeadStep:
    """One accepted node or block, ``input`` -> ``output``."""

    kind: str  # affine, activation, norm, scale, reshape, identity, dropout, softmax
    label: str  # e.g. "Gemm", "MatMul+Add", "Conv1x1", "LayerNorm (decomposed)"
    nodes: tuple[int, ...]  # node indices (topological order)
    input: str
    output: str
    #: node index -> replacement node C must use instead (see _batch_flatten)
    rewrites: tuple[tuple[int, onnx.NodeProto], ...] = ()


@dataclass(frozen=True)
class Head:
    """A detected classifier head.

    Attributes
    ----------
    logits_name : str
        The graph output the head produces.
    pooled_tensor : str
        Input of the whole head (the ``pooled`` cut).
    penultimate_tensor : str
        Input of the head's last affine layer (the ``penultimate`` cut); equal
        to ``pooled_tensor`` when only reshapes/dropout separate the two.
    steps : tuple of HeadStep
        In graph order, first step reads ``pooled_tensor``.
    """

    logits_name: str
    pooled_tensor: str
    penultimate_tensor: str
    steps: tuple[HeadStep, ...]

    @property
    def rewrites(self) -> dict[int, onnx.NodeProto]:
        """Node replacements the classifier part applies (index -> new node)."""
        return {i: node for step in self.steps for i, node in step.rewrites}

    @property
    def affine_count(self) -> int:
        return sum(1 for s in self.steps if s.kind == "affine")

    def cut_tensor(self, definition: str) -> str:
        if definition == "pooled":
            return self.pooled_tensor
        if definition == "penultimate":
            return self.penultimate_tensor
        raise ValueError(definition)

    def describe(self, ix: GraphIndex) -> list[dict]:
        """JSON-able node chain: label, kind, node names/op types, output shape."""
        out = []
        for step in self.steps:
            nodes = [ix.nodes[i] for i in step.nodes]
            out.append(
                {
                    "kind": step.kind,
                    "label": step.label,
                    "nodes": [f"{n.name or '?'} ({n.op_type})" for n in nodes],
                    "input": step.input,
                    "output": step.output,
                    "output_shape": ix.shape(step.output),
                }
            )
        return out


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _matmul_affine(ix: GraphIndex, node: onnx.NodeProto) -> bool:
    if node.op_type != "MatMul" or len(node.input) != 2:
        return False
    x, w = node.input
    w_shape = ix.shape(w)
    return (
        not ix.is_const(x)
        and ix.is_const(w)
        and is_vector_like(ix.shape(x))
        and w_shape is not None
        and len(w_shape) == 2
    )


def _conv_affine(ix: GraphIndex, node: onnx.NodeProto, x: str) -> bool:
    if node.op_type != "Conv" or node.input[0] != x or not ix.is_const(node.input[1]):
        return False
    if len(node.input) > 2 and node.input[2] and not ix.is_const(node.input[2]):
        return False
    w_shape, x_shape, y_shape = ix.shape(node.input[1]), ix.shape(x), ix.shape(node.output[0])
    if w_shape is None or x_shape is None or y_shape is None or len(x_shape) < 3:
        return False
    spatial_ones = all(d == 1 for d in x_shape[2:]) and all(d == 1 for d in y_shape[2:])
    return all(d == 1 for d in w_shape[2:]) and int(_attr(node, "group", 1)) == 1 and spatial_ones


def _shape_subgraph(ix: GraphIndex, shape_tensor: str, data: str) -> list[int] | None:
    """Nodes computing a Reshape's shape from ``Shape(data)`` and constants, or None."""
    stack, seen, nodes = [shape_tensor], set(), []
    while stack:
        t = stack.pop()
        if t in seen or ix.is_const(t):
            continue
        seen.add(t)
        p = ix.producer.get(t)
        if p is None:
            return None
        node = ix.nodes[p]
        if node.op_type == "Shape":
            if node.input[0] != data:
                return None
            nodes.append(p)
            continue
        if node.op_type not in SHAPE_OPS or len(nodes) > 30:
            return None
        nodes.append(p)
        stack.extend(x for x in node.input if x)
    return nodes


def _const_value(ix: GraphIndex, name: str):
    for init in ix.model.graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init)
    p = ix.producer.get(name)
    if p is not None and ix.nodes[p].op_type == "Constant":
        value = _attr(ix.nodes[p], "value")
        if isinstance(value, onnx.TensorProto):
            return onnx.numpy_helper.to_array(value)
    return None


def _batch_flatten(ix: GraphIndex, node: onnx.NodeProto) -> bool:
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(s), 0)), [-1 or D])) where s and x share
    their batch dim (or s is the model input): exporters' ``x.view(input.size(0), -1)``.
    It equals Flatten(x, 1), which C uses instead, because C cannot read ``s`` when it
    lies before the cut."""
    data, shape = node.input[0], node.input[1]
    x_shape, width = ix.shape(data), None
    if x_shape is not None and all(isinstance(d, int) for d in x_shape[1:]):
        width = 1
        for d in x_shape[1:]:
            width *= d
    p = ix.producer.get(shape)
    if p is None or ix.nodes[p].op_type != "Concat" or len(ix.nodes[p].input) != 2:
        return False
    first, rest = ix.nodes[p].input
    tail = _const_value(ix, rest)
    if tail is None or tail.size != 1 or int(tail.reshape(-1)[0]) not in (-1, width):
        return False
    t = first
    for _ in range(3):  # Unsqueeze / Cast wrappers
        q = ix.producer.get(t)
        if q is None:
            return False
        qn = ix.nodes[q]
        if qn.op_type in ("Unsqueeze", "Cast", "Identity"):
            t = qn.input[0]
            continue
        break
    if qn.op_type == "Gather":
        index = _const_value(ix, qn.input[1])
        if index is None or index.size != 1 or int(index.reshape(-1)[0]) != 0:
            return False
        if int(_attr(qn, "axis", 0)) != 0:
            return False
    elif qn.op_type == "Slice":
        starts, ends = _const_value(ix, qn.input[1]), _const_value(ix, qn.input[2])
        if starts is None or ends is None or list(starts) != [0] or list(ends) != [1]:
            return False
    else:
        return False
    sp = ix.producer.get(qn.input[0])
    if sp is None or ix.nodes[sp].op_type != "Shape":
        return False
    source = ix.nodes[sp].input[0]
    if source in ix.graph_inputs:
        # dim 0 of a classifier's image input is the batch of every tensor after it
        # (shape inference often loses the symbol on the way, so do not compare them)
        return True
    source_shape = ix.shape(source)
    return (
        source_shape is not None
        and x_shape is not None
        and source_shape[0] == x_shape[0]
        and source_shape[0] is not None
    )


def _ancestors(ix: GraphIndex, tensor: str, limit: int = 64) -> set[str]:
    seen, stack = set(), [tensor]
    while stack and len(seen) < limit:
        t = stack.pop()
        if t in seen or ix.is_const(t):
            continue
        seen.add(t)
        p = ix.producer.get(t)
        if p is not None and ix.nodes[p].op_type in BLOCK_OPS:
            stack.extend(x for x in ix.nodes[p].input if x)
    return seen


def _block(ix: GraphIndex, n: int) -> HeadStep | None:
    """A closed elementwise block computing its output from one root tensor."""
    node = ix.nodes[n]
    if node.op_type not in BLOCK_OPS:
        return None
    var = [x for x in node.input if x and not ix.is_const(x)]
    common = set.intersection(*(_ancestors(ix, v) for v in var))
    if not common:
        return None
    root = max(common, key=ix.position)
    if not is_vector_like(ix.shape(root)):
        return None
    region, stack, seen = {n}, list(var), set()
    while stack:
        t = stack.pop()
        if t == root or t in seen or ix.is_const(t):
            continue
        seen.add(t)
        p = ix.producer.get(t)
        if p is None or ix.nodes[p].op_type not in BLOCK_OPS:
            return None
        if not is_vector_like(ix.shape(t)):
            return None
        region.add(p)
        if len(region) > MAX_BLOCK_NODES:
            return None
        stack.extend(x for x in ix.nodes[p].input if x)
    ops = {ix.nodes[i].op_type for i in region}
    if "ReduceMean" in ops and ({"Sqrt", "Pow"} & ops):
        kind, label = "norm", "LayerNorm (decomposed)"
    elif "Erf" in ops:
        kind, label = "activation", "GELU (Erf form)"
    elif "HardSigmoid" in ops:
        kind, label = "activation", "HardSwish (x*HardSigmoid(x))"
    elif "Sigmoid" in ops:
        kind, label = "activation", "SiLU (x*Sigmoid(x))"
    elif "Tanh" in ops:
        kind, label = "activation", "GELU (tanh form)"
    elif ops & {"Clip", "Relu", "Min", "Max"}:
        kind, label = "activation", "HardSwish (x*ReLU6(x+3)/6)"
    else:
        kind, label = "scale", "elementwise block"
    return HeadStep(kind, label, tuple(sorted(region)), root, node.output[0])


def _step(ix: GraphIndex, t: str) -> HeadStep | None:
    """The head step producing tensor ``t``, or None when ``t`` is not made by one."""
    n = ix.producer.get(t)
    if n is None:
        return None
    node = ix.nodes[n]
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or subgraph_outer_inputs(node):
        return None
    var = [x for x in node.input if x and not ix.is_const(x)]
    if len(var) == 1:
        x = var[0]
        if not is_vector_like(ix.shape(x)):
            return None
        if op == "Gemm":
            if node.input[0] != x or int(_attr(node, "transA", 0)):
                return None
            return HeadStep("affine", "Gemm", (n,), x, t)
        if op == "MatMul":
            if node.input[0] != x or not _matmul_affine(ix, node):
                return None
            return HeadStep("affine", "MatMul", (n,), x, t)
        if op == "Conv":
            if not _conv_affine(ix, node, x):
                return None
            return HeadStep("affine", "Conv1x1", (n,), x, t)
        if op in ("Add", "Sub"):
            m = ix.producer.get(x)
            if m is not None and _matmul_affine(ix, ix.nodes[m]) and ix.consumers.get(x, []) == [n]:
                return HeadStep("affine", f"MatMul+{op}", (m, n), ix.nodes[m].input[0], t)
        if op in SCALE_OPS:
            return HeadStep("scale", op, (n,), x, t)
        if op in SIMPLE_KINDS and node.input[0] == x:
            return HeadStep(SIMPLE_KINDS[op], op, (n,), x, t)
        return None
    if len(var) >= 2:
        if op == "Reshape" and var[0] == node.input[0] and is_vector_like(ix.shape(node.input[0])):
            sub = _shape_subgraph(ix, node.input[1], node.input[0])
            if sub is not None:
                nodes = tuple(sorted([n, *sub]))
                return HeadStep("reshape", "Reshape (computed shape)", nodes, node.input[0], t)
            if _batch_flatten(ix, node):
                flat = onnx.helper.make_node(
                    "Flatten", [node.input[0]], [t], name=node.name or "xnetmap_flatten", axis=1
                )
                return HeadStep(
                    "reshape",
                    "Reshape (batch, -1) as Flatten",
                    (n,),
                    node.input[0],
                    t,
                    rewrites=((n, flat),),
                )
            return None
        return _block(ix, n)
    return None


def walk_head(ix: GraphIndex, output: str) -> tuple[list[HeadStep], str]:
    """Walk back from ``output``; return the accepted steps (output first) and
    the tensor where the walk stopped (the head's input)."""
    steps: list[HeadStep] = []
    t, seen = output, set()
    while t not in seen:
        seen.add(t)
        step = _step(ix, t)
        if step is None:
            break
        steps.append(step)
        t = step.input
    return steps, t


def _head_from_walk(ix: GraphIndex, output: str) -> Head | None:
    steps, start = walk_head(ix, output)
    affine_at = [i for i, s in enumerate(steps) if s.kind == "affine"]
    if not affine_at:
        return None
    last_affine = steps[affine_at[0]]
    between = steps[affine_at[0] + 1 :]
    if all(s.kind in PASSIVE_KINDS for s in between):
        penultimate = start
    else:
        penultimate = last_affine.input
    return Head(output, start, penultimate, tuple(reversed(steps)))


def find_heads(ix: GraphIndex) -> list[Head]:
    """Every graph output's head (outputs without one are left out), in output order."""
    heads = []
    for out in ix.model.graph.output:
        head = _head_from_walk(ix, out.name)
        if head is not None:
            heads.append(head)
    return heads


def choose_main(ix: GraphIndex, heads: list[Head]) -> Head:
    """The main logits among candidate heads (see the module docstring)."""
    order = {out.name: k for k, out in enumerate(ix.model.graph.output)}

    def rank(head: Head):
        trailing_softmax = head.steps[-1].kind == "softmax"
        return (ix.position(head.pooled_tensor), not trailing_softmax, -order[head.logits_name])

    return max(heads, key=rank)


def detect_head(ix: GraphIndex, model_name: str = "the model") -> Head:
    """Detect the main classifier head or raise ModelRejected (exit 3)."""
    heads = find_heads(ix)
    if heads:
        return choose_main(ix, heads)
    reasons = []
    for out in ix.model.graph.output:
        steps, stop = walk_head(ix, out.name)
        p = ix.producer.get(stop)
        where = (
            f"node {ix.nodes[p].name or '?'!r} ({ix.nodes[p].op_type})"
            if p is not None
            else "input"
        )
        reasons.append(
            f"from output {out.name!r} the walk stopped at {where} making {stop!r} {ix.shape(stop)}"
        )
    raise ModelRejected(
        f"{model_name}: no classifier head found: the last layers contain no affine layer "
        f"(Gemm, MatMul, 1x1 Conv on a 1x1 map) on a feature vector ({'; '.join(reasons)}). "
        f"Run `xnetmap inspect {model_name}` to list the tensors and split with --cut TENSOR."
    )


def cut_candidates(ix: GraphIndex, limit: int = 15) -> list[tuple[str, list | None]]:
    """Tensors near the end of the graph that make sensible ``--cut`` values:
    feature-vector-shaped tensors first (latest first), then other late tensors."""
    outputs = {o.name for o in ix.model.graph.output}
    late = []
    for node in reversed(ix.nodes):
        for name in node.output:
            shape = ix.shape(name)
            if shape is not None and len(shape) < 2:
                continue  # shape arithmetic, scalars
            if name and name not in outputs and not ix.is_const(name):
                late.append(name)
    vectors = [t for t in late if is_vector_like(ix.shape(t))]
    chosen = set(vectors)
    rest = [t for t in late if t not in chosen]
    return [(t, ix.shape(t)) for t in (vectors + rest)[:limit]]
