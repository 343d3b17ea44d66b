"""Parallel decode + preprocess with bounded prefetch and deterministic order.

Worker threads decode and preprocess whole batches (Pillow releases the GIL
in decode and resize, NumPy in the normalisation arithmetic), while the
consumer runs onnxruntime, which releases the GIL too. At most ``prefetch``
batches are in flight or waiting, so memory is bounded by
``batch_size x prefetch`` samples whatever the dataset size. Batches come out
in submission order, whatever order the workers finish in.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PreparedBatch:
    """One batch of preprocessed samples.

    Attributes
    ----------
    indices : ndarray of shape (b,) int64
        Dataset indices of the batch, in order.
    X : ndarray of shape (g, ...) float32
        The readable samples only (g <= b), in order.
    good : ndarray of shape (b,) bool
        True where the sample was readable (its row of ``X`` is ``good[:j].sum()``).
    bad : dict of int to str
        Dataset index -> reason, for the unreadable samples.
    """

    indices: np.ndarray
    X: np.ndarray | None
    good: np.ndarray
    bad: dict = field(default_factory=dict)


def prepare_batch(
    load: Callable[[int], np.ndarray], indices: np.ndarray, bad_types: tuple[type, ...]
) -> PreparedBatch:
    """Load and preprocess ``indices`` with ``load``; unreadable samples are listed, never replaced.

    Parameters
    ----------
    load : callable
        ``load(i) -> ndarray float32`` for one sample; raises one of ``bad_types``
        (with an optional ``.reason``) for an unreadable sample.
    indices : ndarray of shape (b,) int
    bad_types : tuple of exception types
        Exceptions that mean "this sample is unreadable"; anything else propagates.
    """
    good = np.zeros(len(indices), dtype=bool)
    bad: dict[int, str] = {}
    X = None
    g = 0
    for j, i in enumerate(indices):
        try:
            x = load(int(i))
        except bad_types as err:
            bad[int(i)] = str(getattr(err, "reason", None) or err or type(err).__name__)
            continue
        if X is None:
            X = np.empty((len(indices), *x.shape), dtype=np.float32)
        elif x.shape != X.shape[1:]:
            raise ValueError(
                f"sample {int(i)} preprocessed to shape {x.shape}, others to {X.shape[1:]}; "
                "the preprocessing must give one fixed size"
            )
        X[g] = x
        good[j] = True
        g += 1
    if X is not None and g < len(indices):
        X = X[:g]
    return PreparedBatch(np.asarray(indices, dtype=np.int64), X, good, bad)


def prepared_batches(
    load: Callable[[int], np.ndarray] | None,
    batches: Iterable[np.ndarray],
    *,
    workers: int = 2,
    prefetch: int | None = None,
    bad_types: tuple[type, ...] = (),
    prepare: Callable[[np.ndarray], PreparedBatch] | None = None,
) -> Iterator[PreparedBatch]:
    """Yield :class:`PreparedBatch` for each index array of ``batches``, in order.

    Parameters
    ----------
    load : callable
        ``load(i) -> ndarray`` (thread-safe); unused when ``prepare`` is given.
    batches : iterable of ndarray of int
        Index arrays, consumed lazily.
    workers : int
        Worker threads; 0 runs everything in the calling thread.
    prefetch : int, optional
        Batches in flight at most (default ``2 * workers``).
    bad_types : tuple of exception types
        See :func:`prepare_batch`.
    prepare : callable, optional
        ``prepare(indices) -> PreparedBatch`` for a whole batch at once (a vectorised
        path); default: :func:`prepare_batch` with ``load``.
    """
    if workers <= 0:
        for idx in batches:
            yield prepare(idx) if prepare is not None else prepare_batch(load, idx, bad_types)
        return
    # Per-image work is split into one chunk per worker, so that every worker helps with
    # the batch the runtime needs next (the pipeline fills in 1/workers of a batch's time).
    chunks = 1 if prepare is not None else workers
    depth = max(1, prefetch if prefetch is not None else 2 * workers)
    pending: collections.deque[list[Future]] = collections.deque()
    it = iter(batches)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xnetmap-decode")
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < depth:
                idx = next(it, None)
                if idx is None:
                    exhausted = True
                    break
                if prepare is not None:
                    pending.append([pool.submit(prepare, idx)])
                else:
                    parts = [p for p in np.array_split(np.asarray(idx), chunks) if len(p)]
                    pending.append([pool.submit(prepare_batch, load, p, bad_types)
                                    for p in parts or [np.asarray(idx)]])
            if not pending:
                break
            yield merge_batches([f.result() for f in pending.popleft()])
    finally:
        for futs in pending:
            for fut in futs:
                fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def merge_batches(parts: list[PreparedBatch]) -> PreparedBatch:
    """One :class:`PreparedBatch` from consecutive parts of a batch (in order)."""
    if len(parts) == 1:
        return parts[0]
    xs = [p.X for p in parts if p.X is not None and len(p.X)]
    shapes = {x.shape[1:] for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"samples of one batch preprocessed to different shapes {shapes}; "
                         "the preprocessing must give one fixed size")
    bad: dict = {}
    for p in parts:
        bad.update(p.bad)
    return PreparedBatch(
        np.concatenate([p.indices for p in parts]),
        np.concatenate(xs) if xs else None,
        np.concatenate([p.good for p in parts]),
        bad,
    )
