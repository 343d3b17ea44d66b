"""A read-only index over a model's top-level graph: producers, consumers,
constants and (inferred) tensor shapes. Head detection and surgery use it."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

Shape = list  # list of int | str | None (None: unknown dim); None for unknown rank


def subgraph_outer_inputs(node: onnx.NodeProto) -> list[str]:
    """Names a node's subgraphs read from the enclosing scope (implicit inputs)."""
    names: list[str] = []
    for attr in node.attribute:
        graphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        for graph in graphs:
            defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
            for inner in graph.node:
                for name in list(inner.input) + subgraph_outer_inputs(inner):
                    if name and name not in defined:
                        names.append(name)
                defined.update(inner.output)
    return names


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Explicit inputs (non-empty) plus implicit outer-scope reads of subgraphs."""
    return [n for n in node.input if n] + subgraph_outer_inputs(node)


def _shape_of(value_info: onnx.ValueInfoProto) -> Shape | None:
    tt = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    dims: list = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def infer_shapes(model: onnx.ModelProto) -> tuple[dict[str, Shape], dict[str, int]]:
    """Tensor name -> shape and tensor name -> ONNX element type, from onnx shape
    inference (with data propagation).

    Works on protos whose initializers are external references (dims are in the
    proto). Inference failures leave shapes unknown rather than raising.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - fall back to what the model declares
        inferred = model
    shapes: dict[str, Shape] = {}
    graph = inferred.graph
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        shape = _shape_of(vi)
        if shape is not None:
            shapes[vi.name] = shape
    for init in graph.initializer:
        shapes[init.name] = [int(d) for d in init.dims]
    return shapes, elem_types(inferred)


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> ONNX element type, for tensors the model or inference declares."""
    out: dict[str, int] = {}
    graph = model.graph
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        if vi.type.HasField("tensor_type"):
            out[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        out[init.name] = init.data_type
    return out


@dataclass
class GraphIndex:
    """Producers, consumers and constant tensors of a model's main graph."""

    model: onnx.ModelProto
    shapes: dict[str, Shape]
    types: dict[str, int] = field(default_factory=dict)
    producer: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, list[int]] = field(default_factory=dict)
    constants: set[str] = field(default_factory=set)
    initializers: set[str] = field(default_factory=set)
    graph_inputs: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, model: onnx.ModelProto) -> GraphIndex:
        shapes, types = infer_shapes(model)
        index = cls(model=model, shapes=shapes, types=types)
        graph = model.graph
        index.initializers = {t.name for t in graph.initializer} | {
            s.values.name for s in graph.sparse_initializer
        }
        index.graph_inputs = [i.name for i in graph.input if i.name not in index.initializers]
        index.constants = set(index.initializers)
        for i, node in enumerate(graph.node):
            ins = node_inputs(node)
            for name in node.output:
                if name:
                    index.producer[name] = i
            for name in ins:
                index.consumers.setdefault(name, []).append(i)
            nondeterministic = node.op_type.startswith("Random")
            if not nondeterministic and all(n in index.constants for n in ins):
                index.constants.update(n for n in node.output if n)
        return index

    @property
    def nodes(self):
        return self.model.graph.node

    def shape(self, name: str) -> Shape | None:
        return self.shapes.get(name)

    def is_const(self, name: str) -> bool:
        return name in self.constants

    def position(self, tensor: str) -> int:
        """Topological position of a tensor: its producer's index (-1 for inputs)."""
        return self.producer.get(tensor, -1)

    def all_tensors(self) -> list[str]:
        names = list(self.graph_inputs)
        for node in self.nodes:
            names.extend(n for n in node.output if n)
        return names


def is_vector_like(shape: Shape | None) -> bool:
    """[N, D], or [N, ...] whose non-batch dims are known and at most one exceeds 1
    ([N, D, 1, 1], [N, 1, 1, D], [N, 1, D])."""
    if shape is None or len(shape) < 2:
        return False
    if len(shape) == 2:
        return True
    rest = shape[1:]
    if not all(isinstance(d, int) for d in rest):
        return False
    return sum(1 for d in rest if d > 1) <= 1


def feature_width(shape: Shape | None) -> int | None:
    """Product of the non-batch dims when all are known ints, else None."""
    if shape is None or len(shape) < 2 or not all(isinstance(d, int) for d in shape[1:]):
        return None
    width = 1
    for d in shape[1:]:
        width *= d
    return width
