"""``check_models``: is a candidate model still functionally equivalent to a reference?

It composes the study's stages (prepare, classifiers, native scores, pair
scores) on two models, then turns what they measured into gates. Two kinds of
evidence, both measured on the validation images:

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

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data import open_dataset
from ..errors import UsageError
from ..runtime import resolve_device
from ..study import statistics as M
from ..study.classifiers import choose_classifiers
from ..study.labels import same_output_space, shared_labels
from ..study.prepare import prepare_models, read_models
from ..study.scores import score_native, score_pairs, val_features
from ..study.settings import StudySettings
from .policy import CheckPolicy
from .result import CheckResult, Metric, drift_metrics, gate, load_baseline, unmeasured_gates

_TAGS = {(0, 1): "ref_to_cand", (1, 0): "cand_to_ref"}


def _direct_metrics(logits, labels, policy: CheckPolicy, settings) -> list[Metric]:
    """Evidence from the two models' own outputs (same output space)."""
    ref_l, cand_l = logits
    out = [gate("top1_agreement",
                100.0 * M.agreement(M.predictions(ref_l), M.predictions(cand_l)), policy)]
    diff = np.abs(ref_l.astype(np.float64) - cand_l.astype(np.float64))
    out.append(gate("max_abs_diff", float(diff.max()), policy))
    out.append(gate("mean_abs_diff", float(diff.mean()), policy))
    if labels is not None:
        ok_r = M.topk_correct(ref_l, labels, 1)
        ok_c = M.topk_correct(cand_l, labels, 1)
        out.append(gate("accuracy_reference", 100.0 * ok_r.mean(), policy))
        out.append(gate("accuracy_candidate", 100.0 * ok_c.mean(), policy))
        ci = M.bootstrap_loss_ci(ok_r, ok_c, n_boot=settings.n_boot, seed=settings.seed)
        out.append(gate("acc_drop", M.loss_points(ok_r, ok_c), policy, interval=ci))
    return out


def _map_metrics(pair_results, policy: CheckPolicy) -> list[Metric]:
    """Evidence from the maps fitted both ways (the paper's stitched loss, agreement, CKA)."""
    out = []
    for pair, tag in zip(pair_results, _TAGS.values()):
        out.append(gate(f"map_agreement_{tag}", 100.0 * pair.agreement, policy))
        if pair.loss is not None:
            out.append(gate(f"loss_{tag}", pair.loss, policy, interval=pair.loss_ci))
    out.append(gate("cka", float(pair_results[0].cka), policy))
    return out


def _choose_head(same: bool, train_ds, notes: list[str]) -> str:
    if same:
        return "native"
    if train_ds is None:
        raise UsageError(
            "the two models do not share an output space (different class counts or labels); "
            "give --train DATA for the map-based comparison"
        )
    if train_ds.labels is None:
        raise UsageError(
            "the models have different label spaces: the map-based check then fits a linear "
            "probe per model and needs --train with labels"
        )
    notes.append("different output spaces: classifiers replaced by linear probes")
    return "probe"


def _skipped_map_gates(policy: CheckPolicy) -> list[str]:
    if any(getattr(policy, k) is not None and k not in policy.explicit
           for k in ("max_loss", "min_map_agreement", "min_cka")):
        return ["map-based gates (max_loss, min_map_agreement, min_cka) skipped: no --train"]
    return []


def check_models(reference, candidate, *, val, train=None, policy: CheckPolicy,
                 baseline=None, settings: StudySettings | None = None, cache_dir=None,
                 progress=None) -> CheckResult:
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
    settings : StudySettings, optional
        Extraction and fitting settings.
    cache_dir : path, optional
        The cache folder (default :func:`xnetmap.cache.cache_root`), shared with
        ``run-study``: features a study extracted are reused here.

    Returns
    -------
    CheckResult
    """
    settings = settings or StudySettings()
    settings.validate()
    device = resolve_device(settings.device)
    infos = read_models([Path(reference), Path(candidate)])
    val_ds = open_dataset(val) if isinstance(val, (str, Path)) else val
    train_ds = open_dataset(train) if isinstance(train, (str, Path)) else train
    prepared = prepare_models(infos, ["reference", "candidate"], val_ds, train_ds, settings,
                              cache_dir, device, progress)
    notes: list[str] = []
    same = same_output_space(infos, [i.output_width for i in infos])
    head = _choose_head(same, train_ds, notes)
    classifiers = choose_classifiers(prepared, replace(settings, head=head), cache_dir, progress)
    val_data = val_features(prepared, val_ds, shared_labels(infos) if same else None)
    logits, _ = score_native(prepared, classifiers, val_data, device)
    metrics, modes = [], []
    if same:
        modes.append("direct")
        metrics += _direct_metrics(logits, val_data.labels, policy, settings)
    if train_ds is not None:
        modes.append("map")
        pairs = score_pairs(prepared, classifiers, val_data, logits, list(_TAGS), settings,
                            cache_dir, device, progress)
        metrics += _map_metrics(pairs.results, policy)
    else:
        notes += _skipped_map_gates(policy)
    metrics += unmeasured_gates(metrics, policy)
    result = CheckResult(
        reference=str(infos[0].path), candidate=str(infos[1].path), metrics=metrics,
        modes=modes, n_val=int(len(val_data.rows)), labelled=val_data.labels is not None,
        notes=notes, reference_sha256=infos[0].sha256, candidate_sha256=infos[1].sha256,
    )
    if baseline is not None:
        result.metrics.extend(drift_metrics(result, load_baseline(baseline), policy))
    return result

