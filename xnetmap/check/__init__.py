"""xnetmap.check: a CI gate for functional equivalence between a reference and a candidate model.

Public API: :func:`check_models`, :class:`CheckResult`, :class:`CheckPolicy`,
:func:`load_policy`, :func:`save_baseline`, :func:`format_summary`,
:func:`write_junit`, :func:`write_json`.
"""

from __future__ import annotations

from .compare import check_models
from .output import format_summary, junit_xml, write_json, write_junit
from .policy import CheckPolicy, load_policy
from .result import CheckResult, Metric, load_baseline, save_baseline

__all__ = [
    "CheckPolicy",
    "CheckResult",
    "Metric",
    "check_models",
    "format_summary",
    "junit_xml",
    "load_baseline",
    "load_policy",
    "save_baseline",
    "write_json",
    "write_junit",
]
