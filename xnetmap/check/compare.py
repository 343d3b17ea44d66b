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
from ..study.labels import place_classes, place_on_train, same_output_space, shared_labels
from ..study.prepare import prepare_models, read_models, run_notes, train_val_overlap
from ..study.scores import cka_sample_note, score_native, score_pairs, val_features
from ..study.settings import StudySettings
from .policy import DEFAULT_THRESHOLDS, CheckPolicy
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


def _place(infos, head: str, val_ds, train_ds):
    """Each val class on an output of the classifiers (native) or a train class (probe)."""
    if head == "probe":
        return place_on_train(val_ds, train_ds), []
    return place_classes(val_ds, infos[0].output_width, shared_labels(infos),
                         what="the reference and the candidate")


def _is_fp16(proto) -> bool:
    """True when a model stores or computes float16 (initializers, I/O, Cast or Constant)."""
    f16 = onnx_float16()
    g = proto.graph
    if any(t.data_type == f16 for t in g.initializer):
        return True
    if any(v.type.tensor_type.elem_type == f16 for v in [*g.input, *g.output, *g.value_info]):
        return True
    return any(a.i == f16 or a.t.data_type == f16 for n in g.node for a in n.attribute
               if n.op_type in ("Cast", "Constant"))


def onnx_float16() -> int:
    """ONNX's FLOAT16 element type (10), without importing onnx at module level."""
    from onnx import TensorProto

    return TensorProto.FLOAT16


def provider_notes(infos, device: str) -> list[str]:
    """What a CPU run cannot show about a float16 model (GPU overflow)."""
    if device != "cpu":
        return []
    return [
        f"the {role} ({info.path.name}) computes in float16 but this gate ran on onnxruntime's "
        "CPU provider, which computes many float16 nodes in float32: it cannot show float16 "
        "overflow (inf/NaN) on a GPU; run with --device cuda on a GPU machine for that"
        for role, info in zip(("reference", "candidate"), infos) if _is_fp16(info.proto)
    ]


def _bad_rows(X) -> int:
    return int((~np.isfinite(np.asarray(X))).any(axis=1).sum())


def finite_metrics(prepared, val, logits) -> tuple[list[Metric], bool]:
    """A failing gate per model with NaN/inf val features or logits, or train features.

    Returns the metrics and whether every train store is finite (maps can be fitted).
    """
    out, train_ok = [], True
    for p, F, L in zip(prepared, val.feats, logits):
        bad = int(((~np.isfinite(F)).any(axis=1) | (~np.isfinite(L)).any(axis=1)).sum())
        n_train = 0 if p.train_store is None else int(
            p.train_store.manifest.get("total_nonfinite", 0))
        train_ok &= n_train == 0
        if bad or n_train:
            where = [f"{bad:,} of {len(F):,} val rows"] if bad else []
            where += [f"{n_train:,} train rows"] if n_train else []
            out.append(Metric(
                f"nonfinite_rows_{p.name}", float(bad + n_train), "",
                f"{p.name} ({p.info.path.name}) gives NaN or inf features or logits on "
                f"{' and '.join(where)}", 0.0, "<=", passed=False))
    return out, train_ok


_METRICS_OF = {"min_agreement": "top1_agreement", "max_acc_drop": "acc_drop",
               "max_loss": "loss_*", "min_map_agreement": "map_agreement_*", "min_cka": "cka"}


def _why(key: str, same: bool, labelled: bool, train: bool, train_ok: bool) -> str:
    if key in ("min_agreement", "max_acc_drop") and not same:
        return "the two models do not share an output space"
    if key == "max_acc_drop" or (key == "max_loss" and train and train_ok):
        return "--val has no labels"
    if not train:
        return "no --train (the map-based comparison needs training images)"
    return "train features are not finite, so no map was fitted"


def unmeasured_default_notes(metrics, policy: CheckPolicy, same, labelled, train,
                             train_ok) -> list[str]:
    """A note for every default gate (no threshold given) this run could not measure, and why.

    Explicit thresholds need no note: an unmeasured one fails (``unmeasured_gates``).
    """
    have = {m.name for m in metrics}
    notes = []
    for key in DEFAULT_THRESHOLDS:
        if key in policy.explicit or getattr(policy, key) is None:
            continue
        pattern = _METRICS_OF.get(key, key)
        if not any(n == pattern or (pattern.endswith("*") and n.startswith(pattern[:-1]))
                   for n in have):
            notes.append(f"default gate {key} ({pattern}) skipped: "
                         f"{_why(key, same, labelled, train, train_ok)}")
    return notes


def check_models(reference, candidate, *, val, train=None, policy: CheckPolicy,
                 baseline=None, settings: StudySettings | None = None, cache_dir=None,
                 progress=None, class_index=None, strict: bool = False) -> CheckResult:
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
    class_index : path, optional
        Class-index file for datasets given as paths (class name -> output index).
    strict : bool
        Refuse (exit 2) when train and val share images, instead of a note.

    Returns
    -------
    CheckResult
    """
    settings = settings or StudySettings()
    settings.validate()
    device = resolve_device(settings.device)
    infos = read_models([Path(reference), Path(candidate)])
    val_ds = _open(val, class_index)
    train_ds = _open(train, class_index)
    notes: list[str] = []
    same = same_output_space(infos, [i.output_width for i in infos])
    head = _choose_head(same, train_ds, notes)
    class_map, placed = _place(infos, head, val_ds, train_ds)
    notes += placed + train_val_overlap(train_ds, val_ds, strict=strict)
    notes += provider_notes(infos, device)
    prepared = prepare_models(infos, ["reference", "candidate"], val_ds, train_ds, settings,
                              cache_dir, device, progress)
    notes = run_notes(prepared, nonfinite=False) + notes
    width = (len(train_ds.class_names or []) or None) if head == "probe" else None
    classifiers = choose_classifiers(prepared, replace(settings, head=head), cache_dir, progress,
                                     width)
    val_data = val_features(prepared, class_map)
    logits, _ = score_native(prepared, classifiers, val_data, device)
    metrics, modes = _measure(prepared, classifiers, val_data, logits, same, train_ds, policy,
                              settings, cache_dir, device, progress, notes)
    metrics += unmeasured_gates(metrics, policy)
    result = CheckResult(
        reference=str(infos[0].path), candidate=str(infos[1].path), metrics=metrics,
        modes=modes, n_val=int(len(val_data.rows)), labelled=val_data.labels is not None,
        notes=notes, reference_sha256=infos[0].sha256, candidate_sha256=infos[1].sha256,
    )
    if baseline is not None:
        result.metrics.extend(drift_metrics(result, load_baseline(baseline), policy))
    return result


def _open(data, class_index):
    if data is None or not isinstance(data, (str, Path)):
        return data
    return open_dataset(data, class_index=class_index)


def _measure(prepared, classifiers, val_data, logits, same, train_ds, policy, settings,
             cache_dir, device, progress, notes) -> tuple[list[Metric], list[str]]:
    """The direct and map-based metrics (and the non-finite gates) of one check."""
    finite, train_ok = finite_metrics(prepared, val_data, logits)
    metrics, modes = [], []
    if same:
        modes.append("direct")
        metrics += _direct_metrics(logits, val_data.labels, policy, settings)
    if train_ds is not None and train_ok:
        modes.append("map")
        pairs = score_pairs(prepared, classifiers, val_data, logits, list(_TAGS), settings,
                            cache_dir, device, progress)
        metrics += _map_metrics(pairs.results, policy)
        notes += cka_sample_note(val_data)
    elif train_ds is not None:
        notes.append("map-based comparison skipped: train features are not finite")
    metrics += finite
    notes += [f"non-finite outputs: {m.description}" for m in finite]
    notes += unmeasured_default_notes(metrics, policy, same, val_data.labels is not None,
                                      train_ds is not None, train_ok)
    return metrics, modes
