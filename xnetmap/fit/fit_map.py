"""Store level fitting: pair two feature stores by sample id and fit a map file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .affine_map import AffineMap
from .store_rows import fit_on_stores


def fit_map(source_store: Any, target_store: Any, out_path: str | os.PathLike | None = None,
            *, progress: Any = None, grams: Any = None, **params: Any) -> AffineMap:
    """Fit ``M: source features -> target features`` and (optionally) save it.

    Parameters
    ----------
    source_store, target_store : FeatureStore or path
        Stores extracted from the same dataset (same sample ids, same order).
    out_path : path, optional
        Where to write the ``.npz`` map file.
    progress : callable, optional
        Receives each ``gd`` epoch record.
    grams : GramCache, optional
        Source Gram sums shared by several fits (:mod:`xnetmap.fit.gram_cache`).
    **params
        :class:`AffineMap` hyperparameters.

    Returns
    -------
    AffineMap
        Fitted; ``provenance_`` holds the two model digests and store paths.

    Raises
    ------
    InputError
        Sample ids differ (first mismatch named), every row is masked, or the
        features hold NaN/inf.
    """
    amap = AffineMap(**params)
    fit_on_stores(amap, source_store, target_store, progress=progress, grams=grams)
    if out_path is not None:
        amap.save(Path(out_path))
    return amap
