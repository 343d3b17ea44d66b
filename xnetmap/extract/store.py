"""The on-disk feature store: shards of features, ids, labels, mask, manifest.

Layout of a store directory::

    manifest.json            format version, model sha256, dataset fingerprint,
                             preprocessing, shards (file, rows, sha256), bad samples,
                             counts; "complete": true only once everything is written
    ids.json                 sample ids, dataset order
    labels.npy               int64 (n,), absent for unlabeled datasets
    shard-00000.npy ...      features, rows [start, stop), (rows, D), float32 or float16
    mask.npy                 bool (n,), True = unreadable sample (its row is all zero)
    .xnetmap-extract.lock    flock held by the run writing the store (empty file)

Every file is written atomically (temp file in the same directory, fsync,
rename, fsync of the directory), so a crash leaves either the old file or the
new one, never a torn one. ``manifest.json`` lists only shards whose file was
renamed into place, so a resumed run can trust it, and re-verifies the shard
checksums anyway.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fsutil import atomic_write_bytes, file_sha256

FORMAT = "xnetmap-feature-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IDS = "ids.json"
LABELS = "labels.npy"
MASK = "mask.npy"


def shard_name(k: int) -> str:
    """File name of shard ``k``."""
    return f"shard-{k:05d}.npy"


def npy_bytes(arr: np.ndarray) -> bytes:
    """The ``.npy`` serialisation of ``arr`` (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def atomic_save_npy(path: str | os.PathLike, arr: np.ndarray) -> str:
    """Save ``arr`` as ``.npy`` atomically; returns the file's sha256 (hex)."""
    data = npy_bytes(arr)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_manifest(path: str | os.PathLike) -> dict | None:
    """The manifest of the store at ``path``, or None when there is none.

    Raises
    ------
    InputError
        The manifest exists but is not a readable xnetmap store manifest.
    """
    p = Path(path) / MANIFEST
    if not p.exists():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise InputError(
            f"{p} is not valid JSON ({err}); remove the store or use --overwrite"
        ) from err
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise InputError(
            f"{p} is not an xnetmap feature-store manifest; use another -o or --overwrite"
        )
    if m.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"{p} has store format version {m.get('format_version')}, newer than this xnetmap "
            f"understands ({FORMAT_VERSION}); upgrade xnetmap"
        )
    return m


class FeatureStore:
    """A complete feature store opened for reading.

    Each shard is memory-mapped once, when first needed, and its sha256 is computed
    over the mapped bytes before any row is used: a changed or truncated shard is an
    :class:`InputError` (exit 2) naming it, never features used silently. The array
    is a view of that same mapping (the bytes that were hashed), so a store larger
    than memory costs page cache, not process memory. (xnetmap replaces files by
    rename, which leaves an open mapping on the old bytes; a file rewritten in place
    by another program while a store is open is not detected.)

    Attributes
    ----------
    path : Path
    manifest : dict
    n : int
        Number of samples (rows), including masked ones.
    dim : int
        Feature width D.
    ids : list of str
        Sample ids, dataset order.
    labels : ndarray of shape (n,) int64, or None
    mask : ndarray of shape (n,) bool
        True = unreadable sample; its feature row is all zero.
    model_sha256 : str
    run : dict
        What the run that returned this store did (``extract_features`` fills it:
        reused, resumed shards, recomputed shards, bad/non-finite/zero-norm counts).
    """

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self.n = int(manifest["n"])
        self.dim = int(manifest["dim"])
        self.model_sha256 = manifest["model_sha256"]
        self.dtype = np.dtype(manifest["dtype"])
        self._shards = manifest["shards"]
        self._starts = np.array([s["start"] for s in self._shards], dtype=np.int64)
        self._mm: dict[int, np.ndarray] = {}
        self._maps: dict[int, tuple[mmap.mmap, int]] = {}  # the mapping, its data offset
        self._open_lock = threading.Lock()  # each shard mapped and hashed once
        self._ids: list[str] | None = None
        self.run: dict = {}
        self.labels = None
        if manifest.get("labeled", (self.path / LABELS).exists()):
            self.labels = self._side_array(LABELS, np.int64)
        self.mask = self._side_array(MASK, np.bool_)

    def _side_array(self, name: str, dtype) -> np.ndarray:
        """labels.npy / mask.npy, checked against the manifest's row count."""
        p = self.path / name
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(
                f"feature store {self.path}: {name} is missing or unreadable ({err}); re-run "
                "the `xnetmap extract` command that made the store to repair it"
            ) from None
        if arr.shape != (self.n,) or not np.can_cast(arr.dtype, dtype, casting="same_kind"):
            raise InputError(
                f"feature store {self.path}: {name} holds {arr.dtype} {arr.shape}, expected "
                f"{np.dtype(dtype)} ({self.n},); re-run the `xnetmap extract` command that made "
                "the store to repair it"
            )
        return arr.astype(dtype, copy=False)

    @classmethod
    def open(cls, path: str | os.PathLike) -> FeatureStore:
        """Open a complete store.

        Raises
        ------
        InputError
            No store at ``path``, or it is incomplete (resume it with ``xnetmap extract``).
        """
        p = Path(path)
        m = read_manifest(p)
        if m is None:
            raise InputError(
                f"{p} is not a feature store (no {MANIFEST}); run `xnetmap extract` first"
            )
        if not m.get("complete"):
            raise InputError(
                f"feature store {p} is incomplete ({len(m.get('shards', []))} shard(s) written); "
                "re-run the same `xnetmap extract` command to finish it"
            )
        return cls(p, m)

    # -- reading -------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            try:
                ids = json.loads((self.path / IDS).read_text())
            except (OSError, ValueError) as err:
                ids, why = None, str(err)
            else:
                why = f"{len(ids) if isinstance(ids, list) else type(ids).__name__} ids"
            if not isinstance(ids, list) or len(ids) != self.n:
                raise InputError(
                    f"feature store {self.path}: {IDS} is missing or wrong ({why}; expected "
                    f"{self.n}); re-run the `xnetmap extract` command that made the store to "
                    "repair it"
                )
            self._ids = ids
        return self._ids

    def __len__(self) -> int:
        return self.n

    def _shard(self, k: int) -> np.ndarray:
        arr = self._mm.get(k)
        if arr is None:
            with self._open_lock:  # a study's fits read one store from two threads
                arr = self._mm.get(k)
                if arr is None:
                    arr = self._read_verified(k)
                    self._mm[k] = arr
        return arr

    def advise(self, start: int, stop: int) -> None:
        """Ask the kernel to read rows ``[start, stop)`` of the opened shards ahead
        (``madvise(MADV_WILLNEED)``; asynchronous, costs no copy; a no-op elsewhere)."""
        for mm, off, length in self.advise_ranges(start, stop):
            mm.madvise(mmap.MADV_WILLNEED, off, length)

    def advise_ranges(self, start: int, stop: int) -> list[tuple[mmap.mmap, int, int]]:
        """``(mapping, page-aligned offset, length)`` of rows ``[start, stop)`` in the opened
        shards, for ``madvise`` (empty where ``MADV_WILLNEED`` does not exist)."""
        if not hasattr(mmap, "MADV_WILLNEED"):
            return []
        out = []
        row = self.dim * self.dtype.itemsize
        k = int(np.searchsorted(self._starts, start, side="right") - 1)
        while k < len(self._shards) and start < stop:
            s = self._shards[k]
            hi = min(stop, int(s["stop"]))
            if k in self._maps:
                mm, data = self._maps[k]
                off = data + (start - int(s["start"])) * row
                page = off - off % mmap.PAGESIZE
                out.append((mm, page, off - page + (hi - start) * row))
            start, k = hi, k + 1
        return out

    def _read_verified(self, k: int) -> np.ndarray:
        """Shard ``k`` memory-mapped, its sha256 computed over the mapping and checked.

        Raises
        ------
        InputError
            The shard is missing, truncated, or its bytes differ from the manifest's sha256.
        """
        s = self._shards[k]
        p = self.path / s["file"]
        rows = int(s["stop"]) - int(s["start"])
        try:
            with open(p, "rb") as fh:
                arr, mm, offset, digest = _map_npy_hashed(fh, (rows, self.dim))
        except _Truncated as err:
            raise InputError(self._damaged(s, f"is truncated ({err})")) from None
        except (OSError, ValueError) as err:
            raise InputError(self._damaged(s, f"cannot be read ({err})")) from None
        if digest != s["sha256"]:
            raise InputError(self._damaged(s, "fails its sha256 check (its bytes changed)"))
        self._maps[k] = (mm, offset)
        return arr

    def _damaged(self, s: dict, what: str) -> str:
        return (
            f"feature store {self.path}: shard {s['file']} (rows {s['start']}-{s['stop']}) "
            f"{what}; run the same `xnetmap extract` command on this store to recompute it"
        )

    def shard_arrays(self) -> Iterator[np.ndarray]:
        """The shards as read-only arrays of shape (rows_k, dim), in order (verified)."""
        for k in range(len(self._shards)):
            yield self._shard(k)

    def features(self) -> np.ndarray:
        """All features, ndarray of shape (n, dim) float32 (loads everything into memory).

        For large stores prefer :meth:`iter_batches`.
        """
        out = np.empty((self.n, self.dim), dtype=np.float32)
        for k, s in enumerate(self._shards):
            out[s["start"] : s["stop"]] = self._shard(k)
        return out

    def take(self, indices) -> np.ndarray:
        """Rows ``indices`` (any order), ndarray of shape (len(indices), dim) float32."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"index out of range for a store of {self.n} rows")
        out = np.empty((idx.size, self.dim), dtype=np.float32)
        if idx.size == 0:
            return out
        which = np.searchsorted(self._starts, idx, side="right") - 1
        for k in np.unique(which):
            sel = np.nonzero(which == k)[0]
            out[sel] = self._shard(int(k))[idx[sel] - self._starts[k]]
        return out

    def iter_batches(self, batch_size: int, indices=None) -> Iterator[np.ndarray]:
        """Yield float32 batches of shape (<= batch_size, dim) in order.

        Parameters
        ----------
        batch_size : int
        indices : array-like of int, optional
            Rows to read, in this order; default all rows.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if indices is not None:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
            for s in range(0, idx.size, batch_size):
                yield self.take(idx[s : s + batch_size])
            return
        for s in range(0, self.n, batch_size):
            yield self._contiguous(s, min(s + batch_size, self.n))

    def _contiguous(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.dim), dtype=np.float32)
        k = int(np.searchsorted(self._starts, start, side="right") - 1)
        pos = start
        while pos < stop:
            s = self._shards[k]
            hi = min(stop, s["stop"])
            out[pos - start : hi - start] = self._shard(k)[pos - s["start"] : hi - s["start"]]
            pos = hi
            k += 1
        return out

    def verify(self) -> list[int]:
        """Shards whose file is missing or fails its sha256 (indices into the manifest)."""
        bad = []
        for k, s in enumerate(self._shards):
            p = self.path / s["file"]
            if not p.exists() or file_sha256(p) != s["sha256"]:
                bad.append(k)
        return bad

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, n={self.n}, dim={self.dim}, dtype={self.dtype})"


class _Truncated(ValueError):
    """The file ends before the array its header describes."""


_CHUNK = 8 << 20


def _map_npy_hashed(fh, shape: tuple[int, int]) -> tuple[np.ndarray, mmap.mmap, int, str]:
    """Map a C-order float ``.npy`` of ``shape`` read-only.

    Returns the array (an ``np.memmap`` view), the mapping, the data's byte offset
    in it and the file's sha256.

    The digest is computed over the mapping itself, so the array holds exactly the
    bytes that were hashed. Hand-written because ``np.load(mmap_mode="r")`` maps
    the file a second time, after the hash, by name.
    """
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        got, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        got, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f".npy format version {version} is not one xnetmap writes")
    if tuple(got) != tuple(shape) or fortran or dtype not in (np.float32, np.float16):
        raise ValueError(f"holds {dtype} {tuple(got)}, expected float {tuple(shape)}")
    header = fh.tell()
    need = header + int(np.prod(shape)) * dtype.itemsize
    size = os.fstat(fh.fileno()).st_size
    if size < need:
        raise _Truncated(f"{max(0, size - header):,} of {need - header:,} data bytes")
    mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    h = hashlib.sha256()
    view = memoryview(mm)
    for pos in range(0, size, _CHUNK):
        h.update(view[pos : pos + _CHUNK])  # trailing bytes too: the digest then differs
    arr = np.frombuffer(mm, dtype=dtype, count=int(np.prod(shape)), offset=header)
    view.release()
    return arr.reshape(shape).view(np.memmap), mm, header, h.hexdigest()
