"""Safe model loading: the only way anything in xnetmap reads an ONNX model.

Order of checks (each refuses before the next one reads more):

1. the path exists and is a non-empty file (else InputError / ModelRejected);
2. the bytes parse as a ModelProto with an IR version, a graph, inputs and outputs;
3. every name is text, every graph input/output has a known element type, a
   rank NumPy can build and (inputs) a bounded element count;
4. IR version, opsets and operator domains are ones onnx/onnxruntime support;
   custom domains are checked per node, local functions included;
5. every external-data reference is validated without reading it
   (:func:`validate_external_data`);
6. ``onnx.checker`` runs on the *path* (works for models over 2 GB);
7. only then is external data loaded, when asked for.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import onnx

from ..errors import InputError, ModelRejected
from .external_data import validate_external_data

#: Operator domains accepted besides the model's own local functions.
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
#: Oldest default-domain opset accepted (onnxruntime's floor).
MIN_OPSET = 7
#: Operators refused in every domain: an EPContext node makes onnxruntime read a
#: file or blob named by the model (``ep_cache_context``) and hand it to a provider.
REFUSED_OPS = ("EPContext",)
#: Most dimensions of a graph input/output (NumPy's limit on an array's rank).
MAX_RANK = 64
#: Most elements xnetmap builds from a model's declared input shape, per sample
#: (fixed dims as declared, symbolic non-batch dims at 224): 2**27 elements, 512 MiB
#: of float32. Real image classifiers stay far below it (3 x 2048 x 2048 is 12.6 M).
MAX_INPUT_ELEMENTS = 1 << 27
#: Stand-in for a symbolic non-batch input dim when inputs are made up.
DEFAULT_SPATIAL = 224


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"model file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the path of an .onnx file")
    if path.stat().st_size == 0:
        raise ModelRejected(f"{path} is empty (0 bytes); it is not an ONNX model")


def _parse(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf raises several types
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelRejected(
            f"{path} is not a valid ONNX model: it does not parse as a ModelProto "
            f"({reason}); the file may be truncated or not ONNX at all"
        ) from None
    problems = []
    if model.ir_version <= 0:
        problems.append("no IR version")
    if not model.HasField("graph"):
        problems.append("no graph")
    elif not model.graph.node:
        problems.append("a graph without nodes")
    elif not model.graph.output:
        problems.append("a graph without outputs")
    if problems:
        raise ModelRejected(
            f"{path} is not a valid ONNX model: it parsed to a ModelProto with "
            f"{' and '.join(problems)}; the file may be truncated or not ONNX at all"
        )
    return model


def _iter_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        yield from _iter_subgraph_nodes(node)


def _iter_subgraph_nodes(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.HasField("g"):
            yield from _iter_nodes(attr.g)
        for sub in attr.graphs:
            yield from _iter_nodes(sub)


def _shape_text(dims: list) -> str:
    """A shape for a message, shortened when it has many dims."""
    shown = [str(d) for d in dims[:8]]
    more = f", ... ({len(dims)} dims)" if len(dims) > 8 else ""
    return f"[{', '.join(shown)}{more}]"


def sample_shape(dims: list) -> list[int]:
    """The shape of one made-up sample for an input declared with ``dims``: fixed
    dims as declared, a symbolic batch dim at 1, other symbolic dims at 224."""
    shape = []
    for i, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            shape.append(d)
        else:
            shape.append(1 if i == 0 else DEFAULT_SPATIAL)
    return shape


def check_input_size(name: str, dims: list, where: str) -> None:
    """Refuse an input whose declared shape xnetmap could not build: a rank over
    :data:`MAX_RANK` or more than :data:`MAX_INPUT_ELEMENTS` elements per sample.
    Checked before any array is allocated."""
    if len(dims) > MAX_RANK:
        raise ModelRejected(
            f"{where}: input {name!r} has rank {len(dims)} (shape {_shape_text(dims)}); "
            f"xnetmap handles inputs of at most {MAX_RANK} dims: this is not an image classifier"
        )
    count = 1
    for d in sample_shape(dims):
        count *= d
    if count > MAX_INPUT_ELEMENTS:
        symbolic = any(not isinstance(d, int) or d <= 0 for d in dims[1:])
        assumed = f" (symbolic dims taken as {DEFAULT_SPATIAL})" if symbolic else ""
        raise ModelRejected(
            f"{where}: input {name!r} has shape {_shape_text(dims)}: {count:.3g} elements in "
            f"one input batch{assumed}, over xnetmap's limit of {MAX_INPUT_ELEMENTS:,}; "
            "re-export the model with a realistic input shape"
        )


def _fixed_count(dims: list) -> int:
    """Product of the fixed (positive integer) dims."""
    return math.prod(d for d in dims if isinstance(d, int) and d > 0)


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
        for d in vi.type.tensor_type.shape.dim
    ]


def _names(model: onnx.ModelProto):
    """Every name-like string field a later step uses (protobuf hands back bytes
    for a string that is not valid UTF-8)."""
    graph = model.graph
    for vi in (*graph.input, *graph.output, *graph.value_info):
        yield "value", vi.name
    for init in graph.initializer:
        yield "initializer", init.name
    for node in (*_iter_nodes(graph), *(n for f in model.functions for n in f.node)):
        yield "node", node.name
        yield "operator", node.op_type
        yield "domain", node.domain
        yield from (("tensor", t) for t in (*node.input, *node.output))
    for f in model.functions:
        yield "function", f.name
        yield "domain", f.domain
    for opset in model.opset_import:
        yield "domain", opset.domain
    for prop in model.metadata_props:
        yield "metadata", prop.key
        yield "metadata", prop.value


def check_graph_io(model: onnx.ModelProto, path: Path) -> None:
    """Refuse names that are not text, graph inputs/outputs of unknown element type
    or impossible rank, and inputs too large to build (:func:`check_input_size`)."""
    for what, value in _names(model):
        if not isinstance(value, str):
            raise ModelRejected(
                f"{path}: a {what} name is not valid UTF-8 ({bytes(value)[:40]!r}); the file is "
                "damaged or not a model an exporter wrote"
            )
    known = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
    inits = {i.name for i in model.graph.initializer}
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            if not vi.type.HasField("tensor_type"):
                continue  # sequences/maps: heads.py and split refuse them with their reasons
            elem = vi.type.tensor_type.elem_type
            if elem not in known:
                raise ModelRejected(
                    f"{path}: graph {kind} {vi.name!r} has element type {elem}, which is "
                    "not an ONNX data type; the file is damaged or was written by a buggy exporter"
                )
            dims = _dims(vi)
            if kind == "input" and vi.name not in inits:
                check_input_size(vi.name, dims, str(path))
            elif len(dims) > MAX_RANK:
                raise ModelRejected(
                    f"{path}: graph {kind} {vi.name!r} has rank {len(dims)}, over {MAX_RANK}"
                )
            elif kind == "output" and _fixed_count(dims[1:]) > MAX_INPUT_ELEMENTS:
                # buffers for features/logits are sized from the declared output shape
                raise ModelRejected(
                    f"{path}: graph output {vi.name!r} has shape {_shape_text(dims)}, over "
                    f"{MAX_INPUT_ELEMENTS:,} elements per sample; this is not an image classifier"
                )


def _refuse_custom(path: Path, custom: Counter) -> ModelRejected:
    listed = ", ".join(f"{op} ({n} node{'s' if n > 1 else ''})" for op, n in custom.items())
    return ModelRejected(
        f"{path}: custom-domain operators are not supported: {listed}; xnetmap runs "
        "standard ONNX operators only: re-export the model without custom operators"
    )


def check_domains(model: onnx.ModelProto, path: Path) -> None:
    """Every node, in the graph, its subgraphs and every local function, is a
    standard operator (:data:`STANDARD_DOMAINS`) or a call of a local function the
    model defines; :data:`REFUSED_OPS` are refused in any domain."""
    local = {(f.domain, f.name) for f in model.functions}
    custom: Counter[str] = Counter()
    nodes = list(_iter_nodes(model.graph))
    for function in model.functions:
        for node in function.node:
            nodes.append(node)
            nodes.extend(_iter_subgraph_nodes(node))
    for node in nodes:
        if node.op_type in REFUSED_OPS:
            raise ModelRejected(
                f"{path}: node {node.name!r} is a {node.domain or 'ai.onnx'}.{node.op_type} "
                "node, which makes onnxruntime load a blob or file the model names; xnetmap "
                "never runs those: export the plain model, not an execution-provider context"
            )
        if node.domain in STANDARD_DOMAINS or (node.domain, node.op_type) in local:
            continue
        custom[f"{node.domain}.{node.op_type}"] += 1
    if custom:
        raise _refuse_custom(path, custom)


def check_versions(model: onnx.ModelProto, path: Path) -> None:
    """Refuse IR versions, opsets and operator domains xnetmap cannot run."""
    if model.ir_version > onnx.IR_VERSION:
        raise ModelRejected(
            f"{path}: IR version {model.ir_version} is newer than this onnx "
            f"({onnx.__version__}) supports ({onnx.IR_VERSION}); upgrade onnx or re-export"
        )
    newest = onnx.defs.onnx_opset_version()
    default_opset = None
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            default_opset = opset.version
            if opset.version > newest:
                raise ModelRejected(
                    f"{path}: opset {opset.version} is newer than this onnx "
                    f"({onnx.__version__}) supports (up to {newest}); re-export with an older "
                    "opset or upgrade onnx/onnxruntime"
                )
            if opset.version < MIN_OPSET:
                raise ModelRejected(
                    f"{path}: opset {opset.version} is older than {MIN_OPSET}, the oldest "
                    "onnxruntime runs; convert it with onnx.version_converter"
                )
    if default_opset is None:
        raise ModelRejected(f"{path}: the model imports no default-domain opset")
    check_domains(model, path)


def run_checker(path: Path) -> None:
    """``onnx.checker`` on the file path (the path form handles models over 2 GB)."""
    try:
        onnx.checker.check_model(str(path))
    except Exception as err:  # noqa: BLE001 - ValidationError and C++ errors
        lines = [line for line in str(err).splitlines() if line.strip()]
        reason = lines[0] if lines else type(err).__name__
        raise ModelRejected(f"{path} fails onnx.checker: {reason}") from None


def load_model(path: str | Path, *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load and validate an ONNX model from an untrusted file.

    Parameters
    ----------
    path : path
        The ``.onnx`` file.
    load_external_data : bool
        Read external tensor data into the proto after every check passed.
        Pass False for models over 2 GB: the proto then holds only references,
        and :func:`split_model` copies the referenced bytes in chunks.

    Returns
    -------
    onnx.ModelProto

    Raises
    ------
    InputError
        Missing path, or a folder (exit 2).
    ModelRejected
        Empty, truncated or garbage bytes, names that are not text, unknown element
        types, inputs too large to build, unsupported IR/opset, custom-domain or
        EPContext operators, unsafe, missing or unknown-keyed external data,
        onnx.checker failure (exit 3).
    """
    path = Path(path)
    _check_path(path)
    model = _parse(path)
    check_graph_io(model, path)
    check_versions(model, path)
    refs = validate_external_data(model, path)
    run_checker(path)
    if load_external_data and refs:
        onnx.load_external_data_for_model(model, os.fspath(path.parent))
    return model
