"""xnetmap.graph: safe model loading, classifier-head detection, split into F and C.

Public API: :func:`load_model`, :func:`file_sha256`, :func:`split_model` (and
:func:`split_model_proto` for a model already loaded), :class:`SplitResult`,
:func:`inspect_model`.
"""

from __future__ import annotations

from ..fsutil import file_sha256
from .inspect import inspect_model
from .load import load_model
from .split import SplitResult, split_model, split_model_proto

__all__ = [
    "SplitResult",
    "file_sha256",
    "inspect_model",
    "load_model",
    "split_model",
    "split_model_proto",
]
