"""Atomic saving of split parts, with external data under names xnetmap chooses.

A part whose initializers reference external data (the source model stored
them outside its ``.onnx``) gets one data file ``<part>.onnx.data`` next to
it; the referenced byte ranges are copied from the validated source files in
chunks, so no tensor is ever held in memory and the input's ``location``
strings are never reused.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from ..fsutil import atomic_write_bytes, atomic_writer
from .external_data import is_external, iter_model_tensors, validate_external_data

CHUNK = 1 << 24  # 16 MiB
ALIGN = 4096


def _copy_external(part: onnx.ModelProto, source_model: Path, data_path: Path) -> bool:
    """Copy the part's external tensors into ``data_path`` (atomically); rewrite
    their references to it. Returns whether the part has external data."""
    refs = {r.tensor_name: r for r in validate_external_data(part, source_model)}
    tensors = [t for t in iter_model_tensors(part) if is_external(t)]
    if not tensors:
        return False
    with atomic_writer(data_path) as out:
        offset = 0
        for tensor in tensors:
            ref = refs[tensor.name]
            pad = (-offset) % ALIGN
            out.write(b"\0" * pad)
            offset += pad
            with open(ref.path, "rb") as src:
                src.seek(ref.offset)
                left = ref.length
                while left:
                    block = src.read(min(CHUNK, left))
                    if not block:
                        raise OSError(f"{ref.path} ended early")
                    out.write(block)
                    left -= len(block)
            del tensor.external_data[:]
            for key, value in (
                ("location", data_path.name),
                ("offset", str(offset)),
                ("length", str(ref.length)),
            ):
                tensor.external_data.add(key=key, value=value)
            offset += ref.length
    return True


def save_part(part: onnx.ModelProto, path: Path, source_model: Path) -> Path | None:
    """Save a split part atomically; returns its external data file, if any.

    ``part`` may hold external references into ``source_model``'s folder; they
    are copied into ``<path>.data`` and the proto is rewritten to point there.
    """
    path = Path(path)
    data_path = path.with_name(path.name + ".data")
    has_data = _copy_external(part, Path(source_model), data_path)
    if not has_data:
        data_path.unlink(missing_ok=True)
    atomic_write_bytes(path, part.SerializeToString())
    return data_path if has_data else None
