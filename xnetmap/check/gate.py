"""``check_models``: is a candidate model still functionally equivalent to a reference?

Two kinds of evidence, both measured on the validation images:

* **direct** (when both models share an output space): top-1 agreement, the
  largest and mean absolute output difference, and with labels each model's
  accuracy and the accuracy drop with a 95 % paired bootstrap interval;
* **map-based** (always available with ``train``; the only way when
  architectures or feature widths differ): affine maps fitted both ways on the
  train features, the paper's stitched loss in both directions, each stitched
  model's agreement with its target, and linear CKA.

Each metric with a threshold in the :class:`~xnetmap.check.policy.CheckPolicy`
is a gate; a baseline from an earlier release adds one drift gate per metric.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import InputError, UsageError
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


def _gate(name: str, value: float, policy: CheckPolicy, interval=None) -> Metric:
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


def _same_output_space(prepared) -> bool:
    from ..study.pipeline import _classifier_width, _labels_meta

    widths = {_classifier_width(p.split.classifier_path) for p in prepared}
    labels = [_labels_meta(p.path) for p in prepared]
    known = [lab for lab in labels if lab is not None]
    return len(widths) == 1 and None not in widths and all(lab == known[0] for lab in known)


def check_models(
    reference,
    candidate,
    *,
    val,
    train=None,
    policy: CheckPolicy,
    baseline=None,
    settings=None,
    cache_dir=".xnetmap-cache",
    progress=None,
) -> CheckResult:
    """Compare ``candidate`` with ``reference`` on ``val`` and apply ``policy``.

    Parameters
    ----------
    reference, candidate : path
        ONNX classifiers.
    val : str or path or Dataset
        Validation images (labels optional).
    train : str or path or Dataset, optional
        Training images for the map-based comparison (required when the models
        do not share an output space).
    policy : CheckPolicy
    baseline : path, optional
        A baseline JSON written by :func:`save_baseline`; each metric's drift
        beyond the policy's tolerance fails.
    settings : xnetmap.study.pipeline.StudySettings, optional
        Extraction and fitting settings.
    cache_dir : path
        Splits, features and maps (content-keyed, reused across runs).

    Returns
    -------
    CheckResult
    """
    from ..data import open_dataset
    from ..runtime import resolve_device
    from ..study import metrics as M
    from ..study.cka import linear_cka
    from ..study.pipeline import (
        StudySettings,
        _labels_meta,
        align_labels,
        choose_classifiers,
        classifier_logits,
        fit_cached,
        map_fit_params,
        prepare_models,
        valid_rows,
    )

    settings = settings or StudySettings()
    settings.validate()
    device = resolve_device(settings.device)
    say = progress or (lambda _m: None)
    paths = [Path(reference), Path(candidate)]
    for p in paths:
        if not p.exists():
            raise InputError(f"model {p} does not exist")
    val_ds = open_dataset(val) if isinstance(val, (str, Path)) else val
    train_ds = None
    if train is not None:
        train_ds = open_dataset(train) if isinstance(train, (str, Path)) else train
    cache = Path(cache_dir)
    prepared = prepare_models(
        paths, ["reference", "candidate"], val_ds, train_ds, settings, cache, device, say
    )
    same = _same_output_space(prepared)
    notes: list[str] = []
    if not same and train_ds is None:
        raise UsageError(
            "the two models do not share an output space (different class counts or labels); "
            "give --train DATA for the map-based comparison"
        )
    head = "native" if same else "probe"
    if head == "probe":
        if train_ds.labels is None:
            raise UsageError(
                "the models have different label spaces: the map-based check then fits a linear "
                "probe per model and needs --train with labels"
            )
        notes.append("different output spaces: classifiers replaced by linear probes")
    from dataclasses import replace

    classifiers = choose_classifiers(prepared, replace(settings, head=head), cache, say)
    rows = valid_rows([p.val_store for p in prepared])
    if len(rows) == 0:
        raise InputError("no val image is readable by both models")
    labels = prepared[0].val_store.labels
    labels = None if labels is None else np.asarray(labels)[rows]
    if labels is not None and same:
        model_labels = next((lab for lab in map(_labels_meta, paths) if lab), None)
        labels = align_labels(labels, val_ds, model_labels)
    feats = [p.val_store.take(rows) for p in prepared]
    logits = [classifier_logits(c, F, device) for c, F in zip(classifiers, feats)]

    out: list[Metric] = []
    modes: list[str] = []
    if same:
        modes.append("direct")
        ref_l, cand_l = logits
        pred_r, pred_c = M.predictions(ref_l), M.predictions(cand_l)
        out.append(_gate("top1_agreement", 100.0 * M.agreement(pred_r, pred_c), policy))
        diff = np.abs(ref_l.astype(np.float64) - cand_l.astype(np.float64))
        out.append(_gate("max_abs_diff", float(diff.max()), policy))
        out.append(_gate("mean_abs_diff", float(diff.mean()), policy))
        if labels is not None:
            ok_r = M.topk_correct(ref_l, labels, 1)
            ok_c = M.topk_correct(cand_l, labels, 1)
            out.append(_gate("accuracy_reference", 100.0 * ok_r.mean(), policy))
            out.append(_gate("accuracy_candidate", 100.0 * ok_c.mean(), policy))
            ci = M.bootstrap_loss_ci(ok_r, ok_c, n_boot=settings.n_boot, seed=settings.seed)
            out.append(_gate("acc_drop", M.loss_points(ok_r, ok_c), policy, interval=ci))
    if train_ds is not None:
        modes.append("map")
        fit_params = map_fit_params(settings, device)
        for (i, j), tag in (((0, 1), "ref_to_cand"), ((1, 0), "cand_to_ref")):
            say(f"fit map {tag.replace('_', ' ')}")
            amap, _ = fit_cached(
                prepared[i].train_store,
                prepared[j].train_store,
                cache,
                fit_params,
                prepared[i].name,
                prepared[j].name,
            )
            mapped = classifier_logits(classifiers[j], amap.transform(feats[i]), device)
            agree = M.agreement(M.predictions(logits[j]), M.predictions(mapped))
            out.append(_gate(f"map_agreement_{tag}", 100.0 * agree, policy))
            if labels is not None:
                ok_n = M.topk_correct(logits[j], labels, 1)
                ok_m = M.topk_correct(mapped, labels, 1)
                ci = M.bootstrap_loss_ci(ok_n, ok_m, n_boot=settings.n_boot, seed=settings.seed)
                out.append(_gate(f"loss_{tag}", M.loss_points(ok_n, ok_m), policy, interval=ci))
        out.append(_gate("cka", float(linear_cka(feats[0], feats[1])), policy))
    elif any(
        getattr(policy, k) is not None and k not in policy.explicit
        for k in ("max_loss", "min_map_agreement", "min_cka")
    ):
        notes.append("map-based gates (max_loss, min_map_agreement, min_cka) skipped: no --train")
    out.extend(unmeasured_gates(out, policy))

    result = CheckResult(
        reference=str(paths[0]),
        candidate=str(paths[1]),
        metrics=out,
        modes=modes,
        n_val=int(len(rows)),
        labelled=labels is not None,
        notes=notes,
        reference_sha256=prepared[0].split.model_sha256,
        candidate_sha256=prepared[1].split.model_sha256,
    )
    if baseline is not None:
        result.metrics.extend(drift_metrics(result, load_baseline(baseline), policy))
    return result


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
    from ..fsutil import atomic_write_json

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
