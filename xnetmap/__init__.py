"""xnetmap: do two trained image classifiers extract the same information from images?

Split ONNX classifiers into a feature extractor F and a classifier C, extract
features, fit affine maps between feature spaces, and measure how well each
classifier labels images from the other network's mapped features
(McNeely-White, Beveridge & Draper, 2019).

The public API is re-exported here lazily so that ``import xnetmap`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "XnetmapError": "xnetmap.errors",
    "UsageError": "xnetmap.errors",
    "InputError": "xnetmap.errors",
    "ModelRejected": "xnetmap.errors",
    "VerificationFailed": "xnetmap.errors",
    "TooManyBadImages": "xnetmap.errors",
    "DeviceUnavailable": "xnetmap.errors",
    # graph
    "load_model": "xnetmap.graph",
    "file_sha256": "xnetmap.graph",
    "split_model": "xnetmap.graph",
    "split_model_proto": "xnetmap.graph",
    "read_model": "xnetmap.graph",
    "ModelInfo": "xnetmap.graph",
    "SplitResult": "xnetmap.graph",
    "inspect_model": "xnetmap.graph",
    "stitch_models": "xnetmap.fit.stitch",
    "stitch_graphs": "xnetmap.graph.stitch",
    # data
    "open_dataset": "xnetmap.data",
    "Dataset": "xnetmap.data",
    "PreprocessSpec": "xnetmap.data",
    "PRESETS": "xnetmap.data",
    "UnreadableImage": "xnetmap.data",
    "annotate_model": "xnetmap.graph",
    # extract
    "extract_features": "xnetmap.extract",
    "FeatureStore": "xnetmap.extract",
    "make_session": "xnetmap.runtime",
    "run_model": "xnetmap.runtime",
    "resolve_device": "xnetmap.runtime",
    # fit
    "AffineMap": "xnetmap.fit",
    "fit_map": "xnetmap.fit",
    # study and reports
    "run_study": "xnetmap.study.run",
    "StudySettings": "xnetmap.study.settings",
    "Study": "xnetmap.study.table",
    "SoftmaxProbe": "xnetmap.study.probe",
    "linear_cka": "xnetmap.study.cka",
    "write_reports": "xnetmap.report",
    "format_table1": "xnetmap.report",
    # check
    "check_models": "xnetmap.check",
    "load_policy": "xnetmap.check",
    "CheckPolicy": "xnetmap.check",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xnetmap' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = ["__version__", *_EXPORTS]
