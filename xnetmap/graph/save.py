"""Split parts on disk: external data under names xnetmap chooses, atomic writes,
and the byte-for-byte comparison that decides whether a part on disk can be reused.

A part whose initializers reference external data (the source model stored them
outside its ``.onnx``) gets one data file ``<part>.onnx.data`` next to it. The
references are first moved to that file in memory (:func:`relocate_external`,
nothing read or written), so the part's final bytes are known before any write;
the referenced byte ranges are then copied from the validated source files in
chunks, so no tensor is ever held in memory and the input's ``location``
strings are never reused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..fsutil import atomic_write_bytes, atomic_writer
from .external_data import ExternalRef, is_external, iter_model_tensors, validate_external_data

CHUNK = 1 << 24  # 16 MiB
ALIGN = 4096


@dataclass(frozen=True)
class DataLayout:
    """Content of a part's external data file: source byte ranges at their offsets.

    Attributes
    ----------
    path : Path
        The part's data file (``<part>.onnx.data``).
    pieces : tuple of (ExternalRef, int)
        Each tensor's validated source range and its offset in ``path``; the gaps
        between pieces are zero padding (tensors start on 4 KiB boundaries).
    size : int
        Size of the file in bytes.
    """

    path: Path
    pieces: tuple[tuple[ExternalRef, int], ...]
    size: int


def relocate_external(
    part: onnx.ModelProto, source_model: Path, data_path: Path
) -> DataLayout | None:
    """Point the part's external tensors at ``data_path`` (in memory only).

    Returns the layout of that file, or None when the part has no external data.
    The references are validated against ``source_model``'s folder first.
    """
    refs = validate_external_data(part, source_model)
    tensors = [t for t in iter_model_tensors(part) if is_external(t)]
    if not tensors:
        return None
    pieces, offset = [], 0
    for tensor, ref in zip(tensors, refs, strict=True):
        offset += (-offset) % ALIGN
        del tensor.external_data[:]
        for key, value in (
            ("location", data_path.name),
            ("offset", str(offset)),
            ("length", str(ref.length)),
        ):
            tensor.external_data.add(key=key, value=value)
        pieces.append((ref, offset))
        offset += ref.length
    return DataLayout(Path(data_path), tuple(pieces), offset)


def _blocks(layout: DataLayout) -> Iterator[bytes]:
    """The data file's content, in blocks of at most CHUNK bytes."""
    position = 0
    for ref, offset in layout.pieces:
        if offset > position:
            yield b"\0" * (offset - position)
        with open(ref.path, "rb") as src:
            src.seek(ref.offset)
            left = ref.length
            while left:
                block = src.read(min(CHUNK, left))
                if not block:
                    raise OSError(f"{ref.path} ended early")
                yield block
                left -= len(block)
        position = offset + ref.length


def write_data(layout: DataLayout) -> None:
    """Write the data file atomically, copying the source ranges in chunks."""
    with atomic_writer(layout.path) as out:
        for block in _blocks(layout):
            out.write(block)


def _regular_file(path: Path, size: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def same_bytes(path: Path, data: bytes) -> bool:
    """Whether ``path`` is a regular file (not a link) holding exactly ``data``."""
    if not _regular_file(path, len(data)):
        return False
    with open(path, "rb") as fh:
        return fh.read(len(data) + 1) == data


def data_matches(layout: DataLayout) -> bool:
    """Whether the data file on disk is exactly what :func:`write_data` would write
    (streamed: no tensor is held in memory)."""
    if not _regular_file(layout.path, layout.size):
        return False
    with open(layout.path, "rb") as fh:
        for block in _blocks(layout):
            if fh.read(len(block)) != block:
                return False
    return True


def write_part(data: bytes, path: Path, layout: DataLayout | None) -> None:
    """Save a serialized part atomically, its data file first; a stale data file of
    an earlier split with external data is removed."""
    if layout is not None:
        write_data(layout)
    else:
        path.with_name(path.name + ".data").unlink(missing_ok=True)
    atomic_write_bytes(path, data)
