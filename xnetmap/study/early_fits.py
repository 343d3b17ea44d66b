"""Maps fitted while the study still extracts: a child process at the lowest CPU priority.

Extraction keeps a CPU's cores busy, but not entirely: onnxruntime's threads sleep
between operators and Python works between batches. A child process at nice 19
fits the maps whose two training stores are already written, in those gaps, and
leaves them in the cache; the map stage then loads them (:func:`fit_cached`), the
same bytes it would have fitted itself (same code, one BLAS thread, as each of
:class:`~xnetmap.study.maps.MapFits`' two jobs). Measured on the demo's five
models (2 cores, four alternating runs each): extraction 29.1 s alone against
30.1 s with the child fitting, which finished 12-13 of the 20 maps meanwhile
(~2.5 s of the map stage). A thread in the study's own process was tried
first and measured worse (extraction 18.6 s -> 24.7 s): it shares the GIL with
extraction, and niceness does not reach the GIL.

Only an optimisation: the child's errors are dropped (the map stage fits that
map again and reports its error), and leaving the block stops the child.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ..cache import MAPS, cache_root
from ..extract import FeatureStore
from ..fit.gram_cache import GramCache
from ..runtime import cpu_count
from .maps import fit_cached, map_cache_key

#: Stores and Gram sums the child keeps between its fits (one study's worth).
_CHILD: dict[str, Any] = {}


def _child_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the child
    try:
        os.nice(19)
    except OSError:  # pragma: no cover - a platform without niceness
        pass
    from threadpoolctl import threadpool_limits

    _CHILD["limit"] = threadpool_limits(1)  # kept: the limit lasts the child's life
    _CHILD["grams"] = GramCache()
    _CHILD["stores"] = {}


def _child_fit(src: str, tgt: str, cache: str | None, fit_params: dict) -> str:
    stores = _CHILD["stores"]
    for p in (src, tgt):
        if p not in stores:
            stores[p] = FeatureStore.open(p)
    return str(fit_cached(stores[src], stores[tgt], cache, fit_params,
                          grams=_CHILD["grams"])[1])


class EarlyFits:
    """Fit ``pairs`` in a nice-19 child as their training stores become ready.

    Use as a context manager around extraction; call :meth:`train_ready` after
    each model's training store is complete, and :meth:`finish` before the map
    stage (it drops the maps not started and waits for the one being fitted).

    Parameters
    ----------
    pairs : list of (int, int)
    cache : path or None
    fit_params : dict
    enabled : bool
        False makes every method a no-op (a GPU, one core, nothing to fit).
    """

    def __init__(self, pairs, cache, fit_params: dict, enabled: bool = True):
        self.pairs = list(pairs)
        self.cache = None if cache is None else str(cache)
        self.fit_params = dict(fit_params)
        self.enabled = enabled and bool(self.pairs)
        self._ready: dict[int, str] = {}
        self._submitted: dict[tuple[int, int], Future] = {}
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> EarlyFits:
        return self

    def train_ready(self, index: int, store: Any) -> None:
        """Model ``index``'s training store is written: start the pairs it completes
        (those whose map is not in the cache yet; the child starts with the first)."""
        if not self.enabled:
            return
        self._ready[index] = store
        for i, j in self.pairs:
            if (i, j) in self._submitted or i not in self._ready or j not in self._ready:
                continue
            src, tgt = self._ready[i], self._ready[j]
            key = map_cache_key(src, tgt, self.fit_params)
            if (cache_root(self.cache) / MAPS / f"{key}.npz").exists():
                continue
            if self._pool is None:
                ctx = multiprocessing.get_context("spawn")  # the parent runs threads: no fork
                self._pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_child_init)
            self._submitted[(i, j)] = self._pool.submit(
                _child_fit, str(Path(src.path).resolve()), str(Path(tgt.path).resolve()),
                self.cache, self.fit_params)

    def finish(self) -> dict[tuple[int, int], str]:
        """Stop: drop the pairs not started, wait for the running one; returns the maps made."""
        done: dict[tuple[int, int], str] = {}
        if self._pool is None:
            return done
        for fut in self._submitted.values():
            fut.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        for key, fut in self._submitted.items():
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                done[key] = fut.result()
        return done

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is None:
            return
        if exc_type is None:
            self.finish()
            return
        for proc in list(getattr(self._pool, "_processes", {}).values()):
            proc.terminate()  # an error or Ctrl-C: do not wait for a fit nobody will read
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None


def early_fits_enabled(fit_params: dict, engine: str) -> bool:
    """Worth a child: maps fitted on this host's CPU, extraction here, two cores or more."""
    return fit_params.get("device", "cpu") == "cpu" and engine == "local" and cpu_count() >= 2
