"""The maps of a study (or a check): fitted once per content key, kept in the one cache."""

from __future__ import annotations

from pathlib import Path

from ..cache import MAPS, cache_root, content_key, slug
from ..fit import AffineMap, fit_map
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


def fit_cached(src_store, tgt_store, cache, fit_params: dict) -> tuple[AffineMap, Path]:
    """Fit ``M`` from ``src_store`` to ``tgt_store``, or load the map fitted before.

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
    return fit_map(src_store, tgt_store, path, **fit_params), path


def map_file_name(source: str, target: str) -> str:
    """A study's map file name in its output folder: ``<A>__to__<B>.npz``."""
    return f"{slug(source, 80)}__to__{slug(target, 80)}.npz"
