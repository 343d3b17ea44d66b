"""Row access and input validation for fitting (arrays, memmaps, feature stores).

The fit never needs the whole matrix in memory: it reads row subsets into
preallocated float32 buffers (``take_into``) and scans the data chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import InputError

#: Most rows of one chunk of a scan.
CHUNK = 16384
#: Bytes of one chunk's float32 rows (source + target): wide features get fewer rows per
#: chunk, so a scan's temporaries stay bounded whatever the widths.
CHUNK_BYTES = 32 << 20


def chunk_rows(width: int) -> int:
    """Rows of a scan chunk for float32 rows ``width`` wide (at most :data:`CHUNK`)."""
    return int(np.clip(CHUNK_BYTES // (4 * max(1, width)), 256, CHUNK))


def as_rows(A: Any, name: str) -> Any:
    """Validate a 2-D float matrix (ndarray, memmap or row source with ``take``)."""
    if hasattr(A, "take_rows"):
        return A
    if not hasattr(A, "shape") or len(A.shape) != 2:
        shape = getattr(A, "shape", None)
        raise InputError(f"{name} must be a 2-D array (n_samples, n_features); got shape {shape}")
    if A.shape[0] < 1 or A.shape[1] < 1:
        raise InputError(f"{name} is empty: shape {tuple(A.shape)}")
    if not np.issubdtype(A.dtype, np.floating):
        raise InputError(f"{name} must hold floating-point features; got dtype {A.dtype}")
    return A


def take_into(A: Any, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Rows ``idx`` (sorted, int64) of ``A`` into ``out[:len(idx)]`` as float32."""
    dst = out[: len(idx)]
    if len(idx) and (hasattr(A, "views") or isinstance(A, np.memmap)):
        gather_sorted(A, idx, dst)
    elif hasattr(A, "take_rows"):
        dst[...] = A.take_rows(idx)
    elif A.dtype == np.float32 and isinstance(A, np.ndarray) and not isinstance(A, np.memmap):
        # mode="clip": with the default "raise", numpy buffers ``out`` (an extra copy);
        # the indices were range-checked when the fit started
        np.take(A, idx, axis=0, out=dst, mode="clip")
    else:
        dst[...] = A[idx]
    return dst


def contiguous_views(A: Any, lo: int, hi: int) -> list[Any]:
    """Rows ``[lo, hi)`` of ``A`` as views (no copy): one for an array, one per shard crossed."""
    if hasattr(A, "views"):
        return A.views(lo, hi)
    return [A[lo:hi]]


def is_in_memory(A: Any) -> bool:
    """Whether ``A`` is an ndarray in memory (not a memmap, not a store)."""
    return isinstance(A, np.ndarray) and not isinstance(A, np.memmap)


def iter_chunks(A: Any, rows: np.ndarray,
                chunk: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(row_indices, float32 block)`` for ``rows`` (sorted) in chunks
    (default: :func:`chunk_rows` of ``A``'s width)."""
    chunk = chunk or chunk_rows(A.shape[1])
    for s in range(0, len(rows), chunk):
        idx = rows[s : s + chunk]
        if len(idx) and idx[-1] - idx[0] == len(idx) - 1:  # contiguous: views, no gather
            views = contiguous_views(A, int(idx[0]), int(idx[-1]) + 1)
            blk = np.asarray(views[0], np.float32) if len(views) == 1 else \
                np.concatenate(views).astype(np.float32, copy=False)
        elif hasattr(A, "views") or isinstance(A, np.memmap):
            blk = gather_sorted(A, idx, np.empty((len(idx), A.shape[1]), np.float32))
        elif hasattr(A, "take_rows"):
            blk = np.asarray(A.take_rows(idx), np.float32)
        else:
            blk = np.asarray(A[idx], np.float32)
        yield idx, blk


def gather_sorted(A: Any, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Rows ``idx`` (sorted, non-empty) of a memmap or store into ``out`` (float32).

    One ``take`` per view of their range: no per-row Python, no index sort.
    """
    take_plan(read_plan(A, idx), out, 0)
    return out


def read_plan(A: Any, idx: np.ndarray) -> list[tuple[Any, np.ndarray, int, int]]:
    """``(view, rows in the view, first, last)`` pieces that read rows ``idx`` (sorted,
    non-empty) of ``A``: one per view (shard) they cross; ``first:last`` are their places
    in ``idx``. A plan can be kept and taken again (:func:`take_plan`)."""
    plan, pos, start = [], 0, int(idx[0])
    for v in contiguous_views(A, start, int(idx[-1]) + 1):
        stop = start + len(v)
        k = int(np.searchsorted(idx, stop))
        if k > pos:
            plan.append((v, idx[pos:k] - start, pos, k))
        pos, start = k, stop
    return plan


def take_plan(plan: list, out: np.ndarray, at: int) -> None:
    """The rows of ``plan`` into ``out[at:]`` (float16 stores are cast while copying)."""
    for v, loc, first, last in plan:
        if v.dtype == np.float32:
            np.take(v, loc, axis=0, out=out[at + first : at + last], mode="clip")
        else:
            out[at + first : at + last] = v[loc]


def iter_pairs(X: Any, Y: Any, rows: np.ndarray,
               chunk: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(row_indices, X block, Y block)`` for ``rows`` in chunks."""
    chunk = chunk or chunk_rows(X.shape[1] + Y.shape[1])
    for (idx, a), (_, y) in zip(iter_chunks(X, rows, chunk), iter_chunks(Y, rows, chunk),
                                strict=True):
        yield idx, a, y


def scan_rows(X: Any, Y: Any, rows: np.ndarray, eps: float) -> np.ndarray:
    """Reject non-finite rows; return the rows whose target is not (near) zero.

    Raises
    ------
    InputError
        Naming up to 10 offending row indices when any row of ``X`` or ``Y`` holds
        NaN or infinity.
    """
    keep = np.ones(len(rows), bool)
    bad: list[int] = []
    pos = 0
    for idx, a, y in iter_pairs(X, Y, rows):
        # A row sum is NaN/inf when any element is; confirm exactly (finite overflow).
        for blk in (a, y):
            s = blk.sum(axis=1, dtype=np.float64)
            sus = np.flatnonzero(~np.isfinite(s))
            if len(sus):
                real = sus[~np.isfinite(blk[sus]).all(axis=1)]
                bad.extend(int(i) for i in idx[real])
        sq = np.einsum("ij,ij->i", y, y, dtype=np.float64)
        keep[pos : pos + len(idx)] = np.sqrt(sq) > eps
        pos += len(idx)
    if bad:
        bad = sorted(set(bad))
        shown = ", ".join(str(i) for i in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise InputError(
            f"{len(bad)} feature row(s) contain NaN or infinity (rows {shown}{more}); "
            "re-extract those samples or mask them out before fitting"
        )
    return rows[keep]
