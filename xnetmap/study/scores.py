"""Stages 3 and 4 of a study: native scores, then pair scores (fit, mapped evaluation, CKA).

Both stages take the prepared models and the val features already read from
their stores; ``run_study`` and ``check_models`` compose them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .cka import linear_cka_summary
from .classifiers import Classifier, classifier_logits
from .evaluate import native_result, pair_result
from .maps import MapFits, map_fit_params
from .prepare import PreparedModel, valid_rows
from .settings import StudySettings
from .table import ModelResult, PairResult


@dataclass
class ValFeatures:
    """The val samples every model could read: their features and (aligned) labels.

    Attributes
    ----------
    rows : ndarray of shape (n,)
        Indices of the samples readable by every model.
    feats : list of ndarray of shape (n, D_model)
    labels : ndarray of shape (n,) or None
        In the classifiers' class order.
    reindexed : bool
        True when the dataset's labels were re-indexed to the classifiers' order.
    n_masked : int
        Unreadable samples left out.
    """

    rows: np.ndarray
    feats: list
    labels: np.ndarray | None
    reindexed: bool
    n_masked: int


def val_features(prepared: list[PreparedModel], class_map=None) -> ValFeatures:
    """Read the val features of every model on the samples all of them could read.

    ``class_map`` (from :func:`~xnetmap.study.labels.place_classes` or
    :func:`~xnetmap.study.labels.place_on_train`) maps each dataset class id to the
    classifier's output index; None keeps the ids.
    """
    stores = [p.val_store for p in prepared]
    rows = valid_rows(stores)
    if len(rows) == 0:
        raise InputError("every val image is unreadable for at least one model; nothing to score")
    labels = stores[0].labels
    labels_v = None if labels is None else np.asarray(labels)[rows]
    reindexed = labels_v is not None and class_map is not None
    if reindexed:
        labels_v = np.asarray(class_map, dtype=np.int64)[labels_v]
    feats = [st.take(rows) for st in stores]
    return ValFeatures(rows, feats, labels_v, reindexed, int(stores[0].n - len(rows)))


def score_native(prepared: list[PreparedModel], classifiers: list[Classifier],
                 val: ValFeatures, device: str) -> tuple[list[np.ndarray], list[ModelResult]]:
    """Each model's own classifier on its own val features: logits and Table 1's native rows."""
    logits, results = [], []
    for p, clf, F in zip(prepared, classifiers, val.feats):
        out = classifier_logits(clf, F, device)
        logits.append(out)
        results.append(native_result(
            p.name, out, val.labels, sha256=p.info.sha256, feature_dim=int(F.shape[1]),
            path=str(p.info.path), cut=str(p.split.cut_tensor),
        ))
    return logits, results


@dataclass
class PairScores:
    """What the pair stage measured: one result and one cached map file per ordered pair."""

    results: list[PairResult]
    map_files: dict[tuple[str, str], Path]


def score_pairs(prepared: list[PreparedModel], classifiers: list[Classifier], val: ValFeatures,
                native_logits: list[np.ndarray], pairs: list[tuple[int, int]],
                settings: StudySettings, cache, device: str,
                say: Callable[[str], Any] | None = None) -> PairScores:
    """For every ordered pair (A, B): fit M_{A→B} on train, score C_B(M F_A(val)), CKA.

    The maps are fitted side by side (:class:`~xnetmap.study.maps.MapFits`) while this
    thread scores the ones already fitted, in the order of ``pairs``.
    """
    say = say or (lambda _m: None)
    cka: dict[tuple[int, int], Any] = {}
    results, files = [], {}
    stores = [p.train_store for p in prepared]
    with MapFits(pairs, stores, cache, map_fit_params(settings, device)) as fits:
        for i, j in pairs:
            say(f"{prepared[i].name} → {prepared[j].name}: fit map ({settings.solver})")
            amap, path = fits.result((i, j))
            results.append(_score_pair(prepared, classifiers, val, native_logits, i, j,
                                       amap, path, settings, device, cka))
            files[(prepared[i].name, prepared[j].name)] = path
    return PairScores(results, files)


def _score_pair(prepared, classifiers, val, native_logits, i, j, amap, path, settings, device,
                cka) -> PairResult:
    """C_B(M_{A→B} F_A(val)) against C_B(F_B(val)), with the CKA of the pair (cached in ``cka``)."""
    src, tgt = prepared[i], prepared[j]
    mapped = classifier_logits(classifiers[j], amap.transform(val.feats[i]), device)
    key = (min(i, j), max(i, j))
    if key not in cka:
        cka[key] = linear_cka_summary(val.feats[i], val.feats[j])
    m = getattr(amap, "metrics_", {}) or {}
    result = pair_result(
        src.name, tgt.name, native_logits[j], mapped, val.labels,
        n_boot=settings.n_boot, seed=settings.seed, fit_cosine=m.get("cosine"),
        fit_r2=m.get("r2"), cka=float(cka[key].cka), map_path=str(path),
    )
    result.cka_debiased = float(cka[key].cka_debiased)
    return result


def cka_sample_note(val: ValFeatures) -> list[str]:
    """A warning when CKA rests on fewer than 5 x the wider feature width samples.

    With n small against the widths, linear CKA between unrelated features is
    already close to 1 (the biased estimator), so the number says little.
    """
    n = len(val.rows)
    widest = max(int(F.shape[1]) for F in val.feats)
    if n >= 5 * widest:
        return []
    return [f"warning: CKA is computed on {n:,} val samples for features up to {widest:,} wide "
            f"(fewer than 5 x {widest:,} = {5 * widest:,}): treat it as unreliable"]
