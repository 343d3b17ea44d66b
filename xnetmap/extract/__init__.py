"""xnetmap.extract: run a feature extractor F over a dataset into a resumable feature store.

Public API: :func:`extract_features`, :class:`FeatureStore`. Submodules:
``store`` (on-disk format, checksums), ``pipeline`` (parallel decode with
bounded prefetch), ``engines`` and ``ray_engine`` (what computes F), ``extract``
(the resumable run). Sessions come from :mod:`xnetmap.runtime`.

``extract_features`` is resolved on first use (PEP 562): a Ray worker that
unpickles :class:`~xnetmap.extract.ray_engine.FeatureActor` imports this package,
and should get only what the actor runs (data, runtime, the batch pipeline), not
the graph layer that ``extract`` needs to split models (onnx and ml_dtypes: about
a second of start-up in every worker process).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .store import FeatureStore

if TYPE_CHECKING:
    from .extract import extract_features

__all__ = ["FeatureStore", "extract_features"]


def __getattr__(name: str):
    if name == "extract_features":
        return importlib.import_module(".extract", __name__).extract_features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
