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
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
    yield from DecodePipeline(load, batches, workers=workers, prefetch=prefetch,
                              bad_types=bad_types, prepare=prepare).consume()


class DecodePipeline:
    """The threaded part of :func:`prepared_batches`, started on construction.

    The first ``prefetch`` batches are submitted at once, so a caller can build it
    before its consumer is ready (extraction starts decoding while onnxruntime still
    opens its session) and hand it more batches later with :meth:`extend`.
    :meth:`close` cancels what was not consumed.
    """

    def __init__(self, load, batches: Iterable[np.ndarray], *, workers: int = 2,
                 prefetch: int | None = None, bad_types: tuple[type, ...] = (),
                 prepare: Callable[[np.ndarray], PreparedBatch] | None = None):
        self.load, self.bad_types, self.prepare = load, bad_types, prepare
        # Per-image work is split into one chunk per worker, so that every worker helps
        # with the batch the runtime needs next (the pipeline fills in 1/workers of a
        # batch's time); the chunks write into one shared batch array (no concatenation).
        self.chunks = 1 if prepare is not None else workers
        self.depth = max(1, prefetch if prefetch is not None else 2 * workers)
        self.pending: collections.deque = collections.deque()
        self._it = iter(batches)
        self._exhausted = False
        # image decoders yield the CPU to inference (see _yield_to_inference); the
        # vectorised array path is too short per batch to be worth a priority change
        self.pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="xnetmap-decode",
            initializer=None if prepare is not None else _yield_to_inference)
        self._fill()

    def extend(self, batches: Iterable[np.ndarray]) -> None:
        """Batches to decode after the ones given so far."""
        self._it = iter(batches)
        self._exhausted = False
        self._fill()

    def _fill(self) -> None:
        while not self._exhausted and len(self.pending) < self.depth:
            idx = next(self._it, None)
            if idx is None:
                self._exhausted = True
                return
            idx = np.asarray(idx, dtype=np.int64)
            if self.prepare is not None:
                self.pending.append((None, [self.pool.submit(self.prepare, idx)]))
                continue
            shared = _SharedBatch(idx)
            bounds = np.linspace(0, len(idx), min(self.chunks, max(len(idx), 1)) + 1)
            bounds = bounds.astype(int)
            self.pending.append((shared, [self.pool.submit(shared.fill, self.load, lo, hi,
                                                           self.bad_types)
                                          for lo, hi in zip(bounds[:-1], bounds[1:])]))

    def __iter__(self) -> Iterator[PreparedBatch]:
        while True:
            self._fill()
            if not self.pending:
                return
            shared, futs = self.pending.popleft()
            results = [f.result() for f in futs]
            yield results[0] if shared is None else shared.finish()

    def consume(self) -> Iterator[PreparedBatch]:
        """Iterate, then :meth:`close` (also when the consumer stops early)."""
        try:
            yield from self
        finally:
            self.close()

    def close(self) -> None:
        for _, futs in self.pending:
            for fut in futs:
                fut.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _yield_to_inference() -> None:
    """Run this decode thread at the lowest CPU priority (Linux: per-thread nice 19).

    When decoders and onnxruntime's threads want more cores than there are, a
    decoder that preempts an inference thread stalls all of them at the next
    parallel barrier; at nice 19 decoders take only the CPU that inference leaves,
    and the whole CPU when inference waits for them. Elsewhere: a no-op.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


class _SharedBatch:
    """One batch filled by several worker threads, each a contiguous range of rows."""

    def __init__(self, indices: np.ndarray):
        self.indices = indices
        self.good = np.zeros(len(indices), dtype=bool)
        self.bad: dict[int, str] = {}
        self.X: np.ndarray | None = None
        self._lock = threading.Lock()

    def fill(self, load, lo: int, hi: int, bad_types) -> None:
        for j in range(lo, hi):
            i = int(self.indices[j])
            try:
                x = load(i)
            except bad_types as err:
                with self._lock:
                    self.bad[i] = str(getattr(err, "reason", None) or err or type(err).__name__)
                continue
            if self.X is None:
                with self._lock:
                    if self.X is None:
                        self.X = np.empty((len(self.indices), *x.shape), dtype=np.float32)
            if x.shape != self.X.shape[1:]:
                raise ValueError(
                    f"sample {i} preprocessed to shape {x.shape}, others to {self.X.shape[1:]}; "
                    "the preprocessing must give one fixed size"
                )
            self.X[j] = x
            self.good[j] = True

    def finish(self) -> PreparedBatch:
        X = self.X
        if X is not None and not self.good.all():
            X = X[self.good]  # rare: unreadable samples leave gaps
        return PreparedBatch(self.indices, X, self.good, dict(sorted(self.bad.items())))
