"""Feature stores as the matrices a map is fitted on: rows paired by sample id, masks applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..extract import FeatureStore


class StoreRows:
    """A feature store seen as an (n, dim) float32 matrix read by row subsets.

    Single-shard stores are used as their memory map directly; multi-shard stores
    are read through ``FeatureStore.take`` so nothing is concatenated in memory.
    """

    def __init__(self, store: Any):
        self.store = store
        self.shape = (int(store.n), int(store.dim))
        self.dtype = np.dtype(np.float32)
        self._shards = list(store.shard_arrays())  # memory maps: nothing read yet
        self._starts = np.array([int(s["start"]) for s in store.manifest["shards"]], np.int64)

    def take_rows(self, idx: np.ndarray) -> np.ndarray:
        return self.store.take(idx)

    def advise_ranges(self, lo: int, hi: int) -> list:
        """Rows ``[lo, hi)`` as ``madvise`` ranges (see ``FeatureStore.advise_ranges``)."""
        ranges = getattr(self.store, "advise_ranges", None)
        return [] if ranges is None else ranges(lo, hi)

    def views(self, lo: int, hi: int) -> list[np.ndarray]:
        """Rows ``[lo, hi)`` as memory-mapped views, one per shard crossed (no copy)."""
        out, pos = [], lo
        shards = self.store.manifest["shards"]
        k = int(np.searchsorted(self._starts, lo, side="right") - 1)
        while pos < hi:
            s = shards[k]
            stop = min(hi, int(s["stop"]))
            out.append(self._shards[k][pos - int(s["start"]) : stop - int(s["start"])])
            pos, k = stop, k + 1
        return out


def open_store(store: Any) -> Any:
    """A ``FeatureStore`` from a store or a path."""
    if hasattr(store, "take") and hasattr(store, "mask"):
        return store
    return FeatureStore.open(store)


def as_matrix(store: Any) -> Any:
    """The store's features as something :class:`AffineMap.fit` can read."""
    shards = list(store.shard_arrays()) if hasattr(store, "shard_arrays") else []
    if len(shards) == 1 and shards[0].shape == (store.n, store.dim) \
            and shards[0].dtype == np.float32:
        return shards[0]
    return StoreRows(store)


def check_ids(src_ids: list[str], tgt_ids: list[str], src_name: str, tgt_name: str) -> None:
    """Raise :class:`InputError` naming the first position where the sample ids differ."""
    if list(src_ids) == list(tgt_ids):
        return
    for i, (a, b) in enumerate(zip(src_ids, tgt_ids, strict=False)):
        if a != b:
            raise InputError(
                f"sample ids of {src_name} and {tgt_name} differ at row {i}: {a!r} vs {b!r}; "
                "extract both stores from the same dataset"
            )
    raise InputError(
        f"{src_name} has {len(src_ids)} samples but {tgt_name} has {len(tgt_ids)} "
        f"(first unmatched row {min(len(src_ids), len(tgt_ids))}); extract both stores from "
        "the same dataset"
    )


def fit_on_stores(amap: Any, source_store: Any, target_store: Any, *,
                  progress: Any = None, grams: Any = None) -> Any:
    """Fit ``amap`` on two stores (ids checked, rows masked in either store skipped).

    ``grams`` (a :class:`~xnetmap.fit.gram_cache.GramCache`) shares the source's Gram
    sums with the other fits from the same store folder.
    """
    src, tgt = open_store(source_store), open_store(target_store)
    src_name = str(getattr(src, "path", "source store"))
    tgt_name = str(getattr(tgt, "path", "target store"))
    check_ids(src.ids, tgt.ids, src_name, tgt_name)
    masked = np.asarray(src.mask, bool) | np.asarray(tgt.mask, bool)
    rows = np.flatnonzero(~masked).astype(np.int64)
    if len(rows) == 0:
        raise InputError(f"every sample is masked (unreadable) in {src_name} or {tgt_name}")
    src_path = getattr(src, "path", None)
    shared = None if grams is None or src_path is None else \
        grams.source(str(Path(src_path).resolve()))
    amap.fit(as_matrix(src), as_matrix(tgt), rows=rows, progress=progress, source_gram=shared)
    amap.info_["n_masked"] = int(masked.sum())
    amap.provenance_ = {
        "source_model_sha256": getattr(src, "model_sha256", None),
        "target_model_sha256": getattr(tgt, "model_sha256", None),
        "source_store": src_name, "target_store": tgt_name,
        "dataset_fingerprint": src.manifest.get("dataset_fingerprint")
        if hasattr(src, "manifest") else None,
    }
    return amap
