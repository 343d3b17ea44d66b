"""xnetmap.graph: safe model loading, classifier-head detection, split into F and C.

Public API: :func:`load_model`, :func:`read_model` / :class:`ModelInfo` (a model
read once per run), :func:`model_preprocess`, :func:`split_model` (and
:func:`split_model_proto` for a model already loaded), :class:`SplitResult`,
:func:`inspect_model`, :func:`annotate_model`, :func:`file_sha256`.
"""

from __future__ import annotations

from ..fsutil import file_sha256
from .annotate import annotate_model
from .inspect import inspect_model
from .load import load_model
from .model_info import ModelInfo, model_preprocess, read_labels, read_model
from .split import SplitResult, split_model, split_model_proto

__all__ = [
    "ModelInfo",
    "SplitResult",
    "annotate_model",
    "file_sha256",
    "inspect_model",
    "load_model",
    "model_preprocess",
    "read_labels",
    "read_model",
    "split_model",
    "split_model_proto",
]
