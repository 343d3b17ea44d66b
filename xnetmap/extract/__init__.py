"""xnetmap.extract: run a feature extractor F over a dataset into a resumable feature store.

Public API: :func:`make_session`, :func:`run_model`, :func:`extract_features`,
:class:`FeatureStore`. Submodules: ``session`` (onnxruntime sessions, providers,
I/O binding), ``store`` (on-disk format, checksums), ``pipeline`` (parallel
decode with bounded prefetch), ``extract`` (the resumable run).
"""

from __future__ import annotations

from .extract import extract_features
from .session import make_session, run_model
from .store import FeatureStore

__all__ = ["FeatureStore", "extract_features", "make_session", "run_model"]
