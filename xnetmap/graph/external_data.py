"""Validate a model's external-data references before anything reads them.

Models come from strangers. A tensor stored outside the ``.onnx`` file names a
``location`` relative to the model's folder; a hostile model can point it at
``/etc/passwd``, ``../../secret`` or a symlink/hardlink to either. Every check
here uses ``lstat``/``realpath`` only: no referenced byte is read, so a refused
target is never opened.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import onnx

from ..errors import ModelRejected
from ..fsutil import may_reference_external_data  # noqa: F401 - re-exported

#: The external-data keys onnxruntime understands; any other key makes it fail
#: later with "model format error!" naming no tensor, so the loader refuses it.
KNOWN_KEYS = ("location", "offset", "length", "checksum")
#: onnxruntime reads ``offset`` as a memory address when ``location`` is this marker.
ORT_MEMORY_MARKER = "_ORT_MEM_ADDR_"


@dataclass(frozen=True)
class ExternalRef:
    """One tensor's validated external-data reference.

    Attributes
    ----------
    tensor_name : str
    location : str
        The ``location`` string exactly as written in the model.
    path : Path
        The data file inside the model's folder (already checked).
    offset, length : int
        Byte range of the tensor inside ``path`` (already checked against its size).
    """

    tensor_name: str
    location: str
    path: Path
    offset: int
    length: int


def iter_graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto in a graph: initializers, sparse initializers, attribute
    tensors, recursively through subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from iter_node_tensors(node)


def iter_node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    """Attribute tensors of one node, recursively through its subgraphs."""
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        if attr.HasField("g"):
            yield from iter_graph_tensors(attr.g)
        for sub in attr.graphs:
            yield from iter_graph_tensors(sub)


def iter_model_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto in a model, including those inside local functions."""
    yield from iter_graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from iter_node_tensors(node)


def is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL


def _tensor_nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes the tensor's raw data must hold, or None when not fixed-size."""
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:  # noqa: BLE001 - exotic types (4-bit, float8): skip the size check
        return None
    if tensor.data_type in (
        onnx.TensorProto.INT4,
        onnx.TensorProto.UINT4,
    ):
        return None
    count = 1
    for dim in tensor.dims:
        count *= int(dim)
    return count * itemsize


def _refuse(model_path: Path, tensor: str, location: str, why: str) -> ModelRejected:
    return ModelRejected(
        f"{model_path}: refusing external data of tensor {tensor!r} at location {location!r}: "
        f"{why}. External data must be plain files inside the model's folder."
    )


def _entries(tensor: onnx.TensorProto, model_path: Path) -> dict[str, str]:
    """The tensor's external-data entries as text, each key known and given once."""
    info: dict[str, str] = {}
    name = tensor.name
    for entry in tensor.external_data:
        key, value = entry.key, entry.value
        if not isinstance(key, str) or not isinstance(value, str):
            raise ModelRejected(
                f"{model_path}: refusing external data of tensor {name!r}: its entry "
                f"{key[:60]!r}: {value[:60]!r} is not valid UTF-8 text; the file is damaged or was "
                "written by a buggy exporter"
            )
        if key not in KNOWN_KEYS:
            raise ModelRejected(
                f"{model_path}: tensor {name!r} has the unknown external-data key {key!r} "
                f"(known: {', '.join(KNOWN_KEYS)}); onnxruntime cannot load it: re-save the "
                "model with onnx.save_model(..., save_as_external_data=True)"
            )
        if key in info:
            raise ModelRejected(
                f"{model_path}: tensor {name!r} gives the external-data key {key!r} twice; "
                "re-save the model with onnx.save_model(..., save_as_external_data=True)"
            )
        info[key] = value
    return info


def _byte_range(info: dict, size: int, model_path: Path, name: str, location: str):
    """(offset, length) from the entries, checked as plain decimal integers inside
    a ``size``-byte file."""
    for key in ("offset", "length"):
        if key in info and not re.fullmatch(r"[0-9]{1,20}", info[key]):
            raise _refuse(
                model_path, name, location,
                f"{key} {info[key][:40]!r} is not an integer >= 0 (negative, or not plain digits)",
            )
    offset = int(info.get("offset", "0"))
    length = int(info["length"]) if "length" in info else size - offset
    if length < 0 or offset + length > size:
        raise _refuse(
            model_path,
            name,
            location,
            f"offset {offset} + length {length} lies beyond the end of the {size}-byte file",
        )
    return offset, length


def _location_parts(model_path: Path, name: str, location: str) -> list[str]:
    """The path components of a ``location``, refused when it is empty, absolute,
    climbs with ``..``, holds a NUL or names onnxruntime's in-memory marker."""
    if not location:
        raise _refuse(model_path, name, location, "the location is empty")
    if ORT_MEMORY_MARKER in location:
        raise _refuse(model_path, name, location, "onnxruntime would read it from process memory")
    if "\x00" in location:
        raise _refuse(model_path, name, location, "the location contains a NUL byte")
    if (
        os.path.isabs(location)
        or PureWindowsPath(location).is_absolute()
        or location.startswith(("/", "\\"))
        or re.match(r"^[A-Za-z]:", location)
    ):
        raise _refuse(model_path, name, location, "the location is an absolute path")
    parts = [p for p in re.split(r"[\\/]+", location) if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(model_path, name, location, "the location contains '..'")
    if not parts:
        raise _refuse(model_path, name, location, "the location names no file")
    return parts


def validate_external_data(model: onnx.ModelProto, model_path: str | Path) -> list[ExternalRef]:
    """Check every external-data reference of ``model`` without reading any data.

    Parameters
    ----------
    model : onnx.ModelProto
        Loaded with ``load_external_data=False``.
    model_path : path
        The ``.onnx`` file; references resolve against its folder.

    Returns
    -------
    list of ExternalRef
        One per external tensor, in model order.

    Raises
    ------
    ModelRejected
        Absolute location, ``..``, a path resolving outside the model folder, a
        symlink or hardlink anywhere on the way, a missing or non-regular file,
        a negative or non-integer offset/length, a range beyond the end of the
        file, a length that does not match the tensor's shape, an unknown or
        repeated key, text that is not UTF-8, onnxruntime's in-memory marker.
    """
    model_path = Path(model_path)
    folder = model_path.parent if str(model_path.parent) else Path(".")
    real_folder = Path(os.path.realpath(folder))
    refs: list[ExternalRef] = []
    for tensor in iter_model_tensors(model):
        if not is_external(tensor):
            continue
        name = tensor.name
        info = _entries(tensor, model_path)
        location = info.get("location", "")
        parts = _location_parts(model_path, name, location)
        # Walk component by component with lstat: a symlink anywhere is refused
        # before realpath could follow it.
        current = folder
        for i, part in enumerate(parts):
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                raise ModelRejected(
                    f"{model_path}: external data file {location!r} for tensor {name!r} is "
                    f"missing (looked for {folder / location}); copy it next to the model."
                ) from None
            except OSError as err:
                raise _refuse(
                    model_path, name, location, f"cannot stat it ({err.strerror})"
                ) from None
            if stat.S_ISLNK(st.st_mode):
                raise _refuse(model_path, name, location, f"{current} is a symbolic link")
            if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                raise _refuse(model_path, name, location, f"{current} is not a folder")
        real = Path(os.path.realpath(current))
        if os.path.commonpath([str(real), str(real_folder)]) != str(real_folder):
            raise _refuse(model_path, name, location, "it resolves outside the model's folder")
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(model_path, name, location, "it is not a regular file")
        if st.st_nlink > 1:
            raise _refuse(
                model_path, name, location, f"it is a hardlink ({st.st_nlink} links to one file)"
            )
        offset, length = _byte_range(info, st.st_size, model_path, name, location)
        expected = _tensor_nbytes(tensor)
        if expected is not None and expected != length:
            raise _refuse(
                model_path,
                name,
                location,
                f"it holds {length} bytes but the tensor's shape {list(tensor.dims)} "
                f"needs {expected}",
            )
        refs.append(ExternalRef(name, location, current, offset, length))
    return refs
