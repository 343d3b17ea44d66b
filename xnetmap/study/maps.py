"""The maps of a study (or a check): fitted once per content key, kept in the one cache.

:class:`MapFits` fits a study's maps side by side on a multi-core CPU: one fit
spends about half of its time in per-row NumPy work on a single core (the
cosine loss and its gradient, the minibatch gathers) between its two GEMMs, so
two fits with half the BLAS threads each keep both cores busy (measured here:
the demo's 20 maps in 4.5-5.3 s instead of 6.6-7.2 s, 2 cores).

Fitting while the study still extracts was tried twice and measured worse: in a
thread at the lowest priority the demo's extraction went from 18.6 s to 24.7 s
(onnxruntime on both cores leaves little, and the fits' memory traffic slows it);
in a child process at nice 19 fed each pair as its stores were written, the
cold demo study took 33.9/35.4/32.0 s against 30.4/32.9/32.2 s without
(alternating runs; extraction +2.8 s on average, the map stage -0.9 s).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..cache import MAPS, cache_root, content_key, slug
from ..fit import AffineMap, blas, fit_map
from ..fit.gram_cache import GramCache
from ..runtime import cpu_count
from .classifiers import store_identity
from .settings import StudySettings


def map_fit_params(settings: StudySettings, device: str) -> dict:
    """AffineMap parameters of a study's (or check's) maps; fits on the GPU when extraction does."""
    params = {"solver": settings.solver, "seed": settings.seed, **settings.fit}
    if device == "cuda":
        params.setdefault("device", "cuda")
    return params


def map_cache_key(src_store, tgt_store, fit_params: dict) -> str:
    """Content key of the map fitted from ``src_store`` to ``tgt_store`` with ``fit_params``.

    Both stores' feature extractors are part of it: one model split at two cuts
    gives two different maps.
    """
    # every hyperparameter, defaults included: a changed default never reuses an old map
    params = AffineMap(**fit_params).get_params()
    return content_key("map/2", store_identity(src_store), store_identity(tgt_store), params)


def fit_cached(src_store, tgt_store, cache, fit_params: dict, progress: Any = None,
               grams: GramCache | None = None) -> tuple[AffineMap, Path]:
    """Fit ``M`` from ``src_store`` to ``tgt_store``, or load the map fitted before.

    ``grams`` shares each source's Gram sums between the fits (:mod:`xnetmap.fit.gram_cache`).

    Returns
    -------
    amap : AffineMap
    path : Path
        The map file in the cache.
    """
    path = cache_root(cache) / MAPS / f"{map_cache_key(src_store, tgt_store, fit_params)}.npz"
    if path.exists():
        return AffineMap.load(path), path
    path.parent.mkdir(parents=True, exist_ok=True)
    return fit_map(src_store, tgt_store, path, progress=progress, grams=grams,
                   **fit_params), path


def fit_jobs(fit_params: dict) -> int:
    """How many maps to fit at once: two on a CPU with two cores or more, else one
    (a GPU runs one fit at a time anyway)."""
    on_cpu = fit_params.get("device", "cpu") == "cpu"
    return 2 if on_cpu and cpu_count() >= 2 else 1


class _Stop(Exception):
    """A fit stopped between two epochs because the study failed (or Ctrl-C)."""


class MapFits:
    """The maps of ``pairs``, fitted (or loaded from the cache) by ``jobs`` threads.

    Use as a context manager; :meth:`result` waits for one map. The fits start in
    the order of ``pairs`` when the block is entered, BLAS on ``cores // jobs``
    threads each. Leaving the block early (an error, Ctrl-C) stops the running fits
    at their next epoch and drops the others; maps already written stay cached.
    With ``jobs`` = 1 :meth:`result` fits in the calling thread.

    Parameters
    ----------
    pairs : list of (int, int)
        Ordered (source, target) indices into ``stores``.
    stores : sequence of FeatureStore
        The training stores.
    cache : path or None
    fit_params : dict
    jobs : int, optional
        Default :func:`fit_jobs`.
    """

    def __init__(self, pairs, stores, cache, fit_params: dict, jobs: int | None = None):
        self.pairs, self.stores = list(pairs), list(stores)
        self.cache, self.fit_params = cache, fit_params
        self.jobs = fit_jobs(fit_params) if jobs is None else max(1, int(jobs))
        self._stop = threading.Event()
        self.grams = GramCache()  # X^T X once per source, not once per map
        # a source with one map gains nothing from a separate Gram pass (one more read of
        # its rows): its fit keeps the one-pass moments (a check's two maps, for one)
        sources = [i for i, _ in self.pairs]
        self._shared = {i for i in sources if sources.count(i) > 1}
        self._futures: dict[tuple[int, int], Future] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._limit: Any = None

    def __enter__(self) -> MapFits:
        if self.jobs > 1 and len(self.pairs) > 1:
            self._limit = blas.limit(max(1, cpu_count() // self.jobs))
            self._limit.__enter__()
            self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="xnetmap-fit")
            self._futures = {key: self._pool.submit(self._fit, key) for key in self.pairs}
        return self

    def _fit(self, key: tuple[int, int]) -> tuple[AffineMap, Path]:
        return fit_cached(self.stores[key[0]], self.stores[key[1]], self.cache,
                          self.fit_params, progress=self._check,
                          grams=self.grams if key[0] in self._shared else None)

    def _check(self, _record: dict) -> None:
        if self._stop.is_set():
            raise _Stop()

    def result(self, key: tuple[int, int]) -> tuple[AffineMap, Path]:
        """The fitted map of pair ``key`` and its cache file (re-raises the fit's error)."""
        fut = self._futures.get(key)
        if fut is None:
            return self._fit(key)
        return fut.result()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is None:
            return
        if exc_type is not None:
            self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._limit.__exit__(None, None, None)


def map_file_name(source: str, target: str) -> str:
    """A study's map file name in its output folder: ``<A>__to__<B>.npz``."""
    return f"{slug(source, 80)}__to__{slug(target, 80)}.npz"
