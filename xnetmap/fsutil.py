"""Atomic file writes: temp file in the same folder, fsync, rename, fsync the folder.

A reader never sees a half-written file: either the old content or the new.
New files get the mode ``open()`` would give them (0666 minus the umask), not
the 0600 of a temp file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import InputError, OutputNotWritten


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable (best effort where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def umask_mode() -> int:
    """0o666 minus the process umask: what ``open()`` would give a new file."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, mode: int | None = None) -> Iterator[IO[bytes]]:
    """Binary file handle whose content replaces ``path`` only when the block succeeds.

    Parameters
    ----------
    path : path
        Final location; its folder is created if missing. A folder that cannot
        be created or written, and a write that fails (disk full, quota, file
        too large, read-only file system), raise :class:`xnetmap.errors.InputError`
        (:class:`~xnetmap.errors.OutputNotWritten` for the latter, exit 2) after
        removing the temp file: the old content of ``path``, if any, stays.
    mode : int, optional
        File permissions; default :func:`umask_mode`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        # a user's output path, not a bug: one line and exit 2, never a traceback

        raise InputError(
            f"cannot write {path} ({err.strerror or err}); choose another output path"
        ) from err
    try:
        os.fchmod(fd, umask_mode() if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename not in (None, tmp, str(path)):
            raise  # about another file the block read: not this write's failure
        # disk full, quota, file too large, read-only: the user's output, not a bug
        raise OutputNotWritten(
            f"cannot write {path} ({err.strerror or err}); nothing was written there: free "
            "space or choose another output path",
            errno=err.errno,
            strerror=err.strerror,
            filename=str(path),
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def make_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the folder ``path`` (and parents) or raise a one-line InputError (exit 2)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"{what} {out} exists and is not a folder; choose another -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"cannot create {what} {out} ({err.strerror}); choose another -o"
        ) from None
    return out


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns the path."""
    with atomic_writer(path, mode=mode) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 twin of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Pretty JSON (sorted keys, trailing newline), written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# (device, inode, size, mtime_ns, ctime_ns) -> digest: a file is hashed once per process
# while it stays unchanged (a study hashes each model several times: split, extract, maps).
_DIGESTS: dict[tuple, str] = {}


def file_sha256(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, hex. Streams; never holds the file in memory.

    Remembered for the process while the file's inode, size, mtime and ctime stay
    the same (any write changes the ctime).
    """
    st = os.stat(path)
    stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    known = _DIGESTS.get(stamp)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    _DIGESTS[stamp] = digest.hexdigest()
    return _DIGESTS[stamp]


def may_reference_external_data(path: str | os.PathLike) -> bool:
    """Conservative, without parsing an ONNX file: True when it holds the protobuf entry
    ``key: "location"``, which every tensor stored as external data carries. False
    means the model certainly has no external data; a false positive only costs the
    caller its slow path.
    """
    import mmap

    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return False
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return mm.find(b"\x0a\x08location") >= 0
