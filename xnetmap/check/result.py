"""What a check measured: metrics, gates against the policy, drift against a baseline."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError
from ..fsutil import atomic_write_json
from .policy import CheckPolicy

BASELINE_SCHEMA = "xnetmap.check-baseline/1"

# metric name -> (policy threshold, comparison, unit, description)
_GATES = {
    "top1_agreement": ("min_agreement", ">=", "%", "top-1 agreement of candidate with reference"),
    "acc_drop": ("max_acc_drop", "<=", "points", "reference accuracy minus candidate accuracy"),
    "max_abs_diff": ("max_abs_diff", "<=", "", "largest absolute output difference"),
    "mean_abs_diff": ("max_mean_abs_diff", "<=", "", "mean absolute output difference"),
    "loss_ref_to_cand": ("max_loss", "<=", "points", "stitched loss, reference F -> candidate C"),
    "loss_cand_to_ref": ("max_loss", "<=", "points", "stitched loss, candidate F -> reference C"),
    "map_agreement_ref_to_cand": (
        "min_map_agreement",
        ">=",
        "%",
        "agreement of C_cand(M F_ref) with the candidate",
    ),
    "map_agreement_cand_to_ref": (
        "min_map_agreement",
        ">=",
        "%",
        "agreement of C_ref(M F_cand) with the reference",
    ),
    "cka": ("min_cka", ">=", "", "linear CKA between the feature spaces"),
    "accuracy_reference": (None, "", "%", "reference top-1 accuracy"),
    "accuracy_candidate": (None, "", "%", "candidate top-1 accuracy"),
}


@dataclass
class Metric:
    """One measured value and, when gated, its threshold and verdict."""

    name: str
    value: float
    unit: str = ""
    description: str = ""
    threshold: float | None = None
    op: str = ""
    passed: bool | None = None  # None = reported, not gated
    interval: tuple[float, float] | None = None

    def verdict(self) -> str:
        return "INFO" if self.passed is None else ("PASS" if self.passed else "FAIL")


@dataclass
class CheckResult:
    """The outcome of :func:`check_models`."""

    reference: str
    candidate: str
    metrics: list[Metric]
    modes: list[str]
    n_val: int
    labelled: bool
    notes: list[str] = field(default_factory=list)
    reference_sha256: str = ""
    candidate_sha256: str = ""

    @property
    def passed(self) -> bool:
        """True when at least one gate was measured and none failed (a gate that
        measured nothing is no evidence of equivalence)."""
        return bool(self.gated) and all(m.passed is not False for m in self.metrics)

    @property
    def gated(self) -> list[Metric]:
        return [m for m in self.metrics if m.passed is not None]

    def values(self) -> dict:
        """Measured (finite) values of the non-drift metrics, by name."""
        return {
            m.name: m.value
            for m in self.metrics
            if not m.name.startswith("drift:") and math.isfinite(m.value)
        }

    def to_dict(self) -> dict:
        return {
            "schema": "xnetmap.check/1",
            "passed": self.passed,
            "reference": self.reference,
            "candidate": self.candidate,
            "reference_sha256": self.reference_sha256,
            "candidate_sha256": self.candidate_sha256,
            "modes": self.modes,
            "n_val": self.n_val,
            "labelled": self.labelled,
            "notes": self.notes,
            "metrics": [_json_metric(m) for m in self.metrics],
        }


def _json_metric(m: Metric) -> dict:
    d = asdict(m)
    if not math.isfinite(m.value):
        d["value"] = None  # strict JSON has no NaN: None = not measured
    return d


def gate(name: str, value: float, policy: CheckPolicy, interval=None) -> Metric:
    key, op, unit, desc = _GATES[name]
    threshold = getattr(policy, key) if key else None
    m = Metric(
        name,
        float(value),
        unit,
        desc,
        threshold,
        op if threshold is not None else "",
        interval=interval,
    )
    if threshold is not None:
        if not math.isfinite(m.value):
            m.passed = False
        elif op == ">=":
            m.passed = m.value >= threshold
        else:
            m.passed = m.value <= threshold
    return m


# why a threshold's metrics can be missing from a run
_NEEDS = {
    "min_agreement": "the two models must share an output space",
    "max_abs_diff": "the two models must share an output space",
    "max_mean_abs_diff": "the two models must share an output space",
    "max_acc_drop": "the two models must share an output space and --val must have labels",
    "max_loss": "needs --train and labels in --val",
    "min_map_agreement": "needs --train",
    "min_cka": "needs --train",
}


def unmeasured_gates(measured: list[Metric], policy: CheckPolicy) -> list[Metric]:
    """A failing gate for each threshold the user asked for whose metric this run could not measure.

    A CI gate must not pass because the evidence it was told to check is absent
    (e.g. ``--min-cka`` without ``--train``, ``--max-acc-drop`` on unlabelled val).
    """
    have = {m.name for m in measured}
    out = []
    for key in policy.explicit:
        threshold = getattr(policy, key, None)
        gated = [n for n, spec in _GATES.items() if spec[0] == key]
        if threshold is None or not gated or any(n in have for n in gated):
            continue
        _key, op, unit, _desc = _GATES[gated[0]]
        out.append(
            Metric(
                gated[0],
                math.nan,
                unit,
                f"not measured ({_NEEDS.get(key, 'not available in this run')}); "
                f"the policy asks for {key}",
                float(threshold),
                op,
                passed=False,
            )
        )
    return out


def drift_metrics(result: CheckResult, base: dict, policy: CheckPolicy) -> list[Metric]:
    """One gate per metric of the baseline: its change, or a failure when not measured now."""
    out = []
    current = result.values()
    for name, before in base["metrics"].items():
        if name in current:
            continue
        m = Metric(
            f"drift:{name}",
            math.nan,
            _GATES.get(name, (None, "", "", ""))[2],
            f"{name} is in the baseline ({before:.4g}) but was not measured in this run",
            policy.drift_tolerance(name),
            "|x| <=",
            passed=False,
        )
        out.append(m)
    for name, value in result.values().items():
        if name not in base["metrics"]:
            continue
        before = float(base["metrics"][name])
        tol = policy.drift_tolerance(name)
        change = float(value) - before
        m = Metric(
            f"drift:{name}",
            change,
            _GATES.get(name, (None, "", "", ""))[2],
            f"change of {name} since the baseline ({before:.4g} -> {value:.4g})",
            tol,
            "|x| <=",
        )
        m.passed = math.isfinite(change) and abs(change) <= tol
        out.append(m)
    return out


def save_baseline(result: CheckResult, path) -> Path:
    """Write the measured metrics as a golden baseline (JSON, atomic)."""
    return atomic_write_json(
        path,
        {
            "schema": BASELINE_SCHEMA,
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "reference_sha256": result.reference_sha256,
            "candidate_sha256": result.candidate_sha256,
            "metrics": result.values(),
        },
    )


def load_baseline(path) -> dict:
    """Read a baseline written by :func:`save_baseline` (schema-checked)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise InputError(f"baseline {path} does not exist; write one with --save-baseline") from err
    except ValueError as err:
        raise InputError(f"baseline {path} is not JSON: {err}") from err
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA:
        raise InputError(f"baseline {path} is not an xnetmap check baseline ({BASELINE_SCHEMA})")
    if not isinstance(data.get("metrics"), dict):
        raise InputError(f"baseline {path} has no 'metrics' table")
    for name, value in data["metrics"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(
                f"baseline {path}: metric {name!r} must be a number, got {value!r}; "
                "write a fresh baseline with --save-baseline"
            )
    return data
