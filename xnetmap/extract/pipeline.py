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
    if prepare is None:

        def prepare(idx: np.ndarray) -> PreparedBatch:
            return prepare_batch(load, idx, bad_types)

    if workers <= 0:
        for idx in batches:
            yield prepare(idx)
        return
    depth = max(1, prefetch if prefetch is not None else 2 * workers)
    pending: collections.deque[Future] = collections.deque()
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
                pending.append(pool.submit(prepare, idx))
            if not pending:
                break
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
