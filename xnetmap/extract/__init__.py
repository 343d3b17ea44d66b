"""xnetmap.extract: run a feature extractor F over a dataset into a resumable feature store.

Public API: :func:`extract_features`, :class:`FeatureStore`. Submodules:
``store`` (on-disk format, checksums), ``pipeline`` (parallel decode with
bounded prefetch), ``extract`` (the resumable run). Sessions come from
:mod:`xnetmap.runtime`.
"""

from __future__ import annotations

from .extract import extract_features
from .store import FeatureStore

__all__ = ["FeatureStore", "extract_features"]
