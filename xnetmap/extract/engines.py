"""Extraction engines: what computes F over the shards' batches.

An engine turns a list of :class:`Unit` (one onnxruntime batch: rows
``[start, stop)`` of shard ``k``, never crossing a shard) into
:class:`UnitResult` values; :mod:`xnetmap.extract.extract` writes them into the
store with one protocol (atomic, checksummed, resumable) whatever the engine.
Units are cut by the store's fixed shard boundaries, so the bytes of a shard do
not depend on which engine computed it, nor on how its units were scheduled.

* ``local``: decode threads and one onnxruntime session in this process.
* ``ray``: Ray Data over a Ray cluster (:mod:`xnetmap.extract.ray_engine`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import UnreadableImage
from ..errors import UsageError
from ..runtime import Runner, cpu_count, make_session
from .fastpath import array_batch_preparer
from .pipeline import DecodePipeline, prepared_batches

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Unit:
    """One batch of work: rows ``[start, stop)`` of shard ``k``."""

    k: int
    start: int
    stop: int


@dataclass
class UnitResult:
    """F of one unit's readable samples.

    Attributes
    ----------
    unit : Unit
    F : ndarray of shape (g, D) float32, or None when no sample was readable
    good : ndarray of shape (stop - start,) bool
        True where the sample was readable (row order of ``F``).
    bad : dict of int to str
        Dataset index -> reason, for the unreadable samples.
    """

    unit: Unit
    F: np.ndarray | None
    good: np.ndarray
    bad: dict = field(default_factory=dict)


def units_of(plan: list[tuple[int, int]], todo: list[int], batch_size: int) -> list[Unit]:
    """The batches of shards ``todo``: ``batch_size`` rows from each shard's start."""
    return [Unit(k, s, min(s + batch_size, plan[k][1]))
            for k in todo for s in range(plan[k][0], plan[k][1], batch_size)]


def feature_dim(sess, known: int | None, sample_shape: Callable[[], tuple]) -> int:
    """Width D of F's output ``[N, D]`` (from its declared shape, ``known``, or one run)."""
    out = sess.get_outputs()[0]
    if len(out.shape) != 2:
        raise UsageError(
            f"features model output {out.name!r} has shape {out.shape}; expected [N, D] "
            "(pass the full classifier or a NAME.features.onnx made by `xnetmap split`)"
        )
    if isinstance(out.shape[1], int) and out.shape[1] > 0:
        return int(out.shape[1])
    if known:
        return int(known)
    runner = Runner(sess)
    return int(runner(np.zeros((1, *sample_shape()), dtype=np.float32))[0].shape[1])


class LocalEngine:
    """Decode threads + one onnxruntime session in this process (the default engine)."""

    name = "local"

    def __init__(self, device: str = "cpu", *, workers: int | None = None,
                 threads: int | None = None, prefetch: int | None = None):
        self.device, self.threads, self.prefetch = device, threads, prefetch
        self.workers = cpu_count() if workers is None else int(workers)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xnetmap-session")
        self._pending: Future | None = None
        self._early: tuple[list[Unit], DecodePipeline] | None = None
        self.sess = None

    def start(self, features_path: Path) -> None:
        """Begin opening the session (C++, GIL released) while the caller goes on."""
        self._pending = self._pool.submit(make_session, features_path, self.device,
                                          threads=self.threads)

    def ready(self) -> str:
        """Wait for :meth:`start`; returns the device really used. Re-raises its errors."""
        try:
            self.sess = self._pending.result()
        finally:
            self._pool.shutdown(wait=False)
        return self.sess.xnetmap_device

    def info(self) -> dict:
        """What the manifest records about this engine."""
        return {"name": self.name, "workers": self.workers}

    def decode_ahead(self, ds, spec, units: list[Unit]) -> None:
        """Start decoding the first of ``units`` now, while the session still opens.

        Image decoding only (array data cost microseconds a batch). :meth:`run` uses
        these batches when its units begin with the same ones; :meth:`close` drops them.
        """
        if self._early is not None or not units or self.workers <= 0 \
                or array_batch_preparer(ds, spec) is not None:
            return
        depth = self.prefetch if self.prefetch is not None else 2 * self.workers
        first = units[:max(1, depth)]
        pipe = DecodePipeline(_loader(ds, spec), _indices(first), workers=self.workers,
                              prefetch=self.prefetch, bad_types=(UnreadableImage,))
        self._early = (first, pipe)

    def close(self) -> None:
        """Drop batches decoded ahead and not run."""
        early, self._early = self._early, None
        if early is not None:
            early[1].close()

    def feature_dim(self, known: int | None, sample_shape: Callable[[], tuple]) -> int:
        return feature_dim(self.sess, known, sample_shape)

    def run(self, ds, spec, units: list[Unit]) -> Iterator[UnitResult]:
        """F of every unit, in order."""
        runner = Runner(self.sess, [self.sess.get_outputs()[0].name])
        early, self._early = self._early, None
        if early is not None and units[: len(early[0])] == early[0]:
            pipe = early[1]  # decoding since before the session was ready
            pipe.extend(_indices(units[len(early[0]):]))
            prepared = pipe.consume()
        else:
            if early is not None:
                early[1].close()
            prepare = array_batch_preparer(ds, spec)
            # the vectorised array path costs microseconds a batch: run it here, between
            # onnxruntime calls, rather than in a thread that preempts onnxruntime's
            # (measured: up to 15 % slower extraction on 2 cores with a decode thread)
            prepared = prepared_batches(_loader(ds, spec), _indices(units),
                                        workers=0 if prepare is not None else self.workers,
                                        prefetch=self.prefetch, bad_types=(UnreadableImage,),
                                        prepare=prepare)
        for u, pb in zip(units, prepared):
            F = runner(pb.X)[0] if pb.X is not None and len(pb.X) else None
            yield UnitResult(u, F, pb.good, pb.bad)


def _loader(ds, spec) -> Callable[[int], np.ndarray]:
    def load(i: int) -> np.ndarray:
        return spec.apply(ds.load(i))

    return load


def _indices(units: list[Unit]) -> Iterator[np.ndarray]:
    return (np.arange(u.start, u.stop, dtype=np.int64) for u in units)
