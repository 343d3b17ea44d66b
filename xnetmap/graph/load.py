"""Safe model loading: the only way anything in xnetmap reads an ONNX model.

Order of checks (each refuses before the next one reads more):

1. the path exists and is a non-empty file (else InputError / ModelRejected);
2. the bytes parse as a ModelProto with an IR version, a graph, inputs and outputs;
3. IR version, opsets and operator domains are ones onnx/onnxruntime support;
4. every external-data reference is validated without reading it
   (:func:`validate_external_data`);
5. ``onnx.checker`` runs on the *path* (works for models over 2 GB);
6. only then is external data loaded, when asked for.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import onnx

from ..errors import InputError, ModelRejected
from .external_data import is_external, iter_model_tensors, validate_external_data

#: Operator domains accepted besides the model's own local functions.
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
#: Oldest default-domain opset accepted (onnxruntime's floor).
MIN_OPSET = 7


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
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _iter_nodes(attr.g)
            for sub in attr.graphs:
                yield from _iter_nodes(sub)


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
    local = {f.domain for f in model.functions}
    custom: Counter[str] = Counter()
    nodes = list(_iter_nodes(model.graph))
    for function in model.functions:
        nodes.extend(function.node)
    for node in nodes:
        if node.domain not in STANDARD_DOMAINS and node.domain not in local:
            custom[f"{node.domain}.{node.op_type}"] += 1
    if custom:
        listed = ", ".join(f"{op} ({n} node{'s' if n > 1 else ''})" for op, n in custom.items())
        raise ModelRejected(
            f"{path}: custom-domain operators are not supported: {listed}; xnetmap runs "
            "standard ONNX operators only: re-export the model without custom operators"
        )


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
        Empty, truncated or garbage bytes, unsupported IR/opset, custom-domain
        operators, unsafe or missing external data, onnx.checker failure (exit 3).
    """
    path = Path(path)
    _check_path(path)
    model = _parse(path)
    check_versions(model, path)
    refs = validate_external_data(model, path)
    run_checker(path)
    if load_external_data and refs:
        onnx.load_external_data_for_model(model, os.fspath(path.parent))
    return model


def has_external_data(model: onnx.ModelProto) -> bool:
    """Whether any tensor of ``model`` still references external data."""
    return any(is_external(t) for t in iter_model_tensors(model))
