"""Turn classifier outputs on val into :class:`ModelResult` / :class:`PairResult`.

The caller runs the classifiers (``C_B(F_B(val))`` and ``C_B(M_{A→B} F_A(val))``)
and passes logits for the same samples in the same order, with unreadable
samples already dropped on both sides; these functions only count.
"""

from __future__ import annotations

import numpy as np

from xnetmap.errors import InputError
from xnetmap.study import statistics as metrics
from xnetmap.study.table import ModelResult, PairResult


def native_result(name: str, logits, labels=None, **info) -> ModelResult:
    """A model's own classifier on its own val features.

    Parameters
    ----------
    name : str
    logits : ndarray of shape (n_samples, n_classes)
        ``C(F(val))``.
    labels : ndarray of shape (n_samples,), int, optional
        None for label-free val (counts stay None).
    **info
        Passed to :class:`ModelResult` (``sha256``, ``feature_dim``, ``path``, ``cut``).
    """
    logits = np.asarray(logits)
    n = int(logits.shape[0])
    res = ModelResult(name=name, n=n, **info)
    if labels is not None:
        res.correct = int(metrics.topk_correct(logits, labels, 1).sum())
        k5 = min(5, logits.shape[1])
        res.top5_correct = int(metrics.topk_correct(logits, labels, k5).sum())
    return res


def pair_result(
    source: str,
    target: str,
    native_logits,
    mapped_logits,
    labels=None,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    fit_cosine: float | None = None,
    fit_r2: float | None = None,
    cka: float | None = None,
    map_path: str = "",
) -> PairResult:
    """Score B's classifier on A's mapped features against B on its own features.

    Parameters
    ----------
    source, target : str
        Names of A and B.
    native_logits : ndarray of shape (n_samples, n_classes)
        ``C_B(F_B(val))``.
    mapped_logits : ndarray of shape (n_samples, n_classes)
        ``C_B(M_{A→B} F_A(val))``, same samples in the same order.
    labels : ndarray of shape (n_samples,), int, optional
        None for label-free val: only agreement is computed.
    n_boot, level, seed
        Paired bootstrap settings for the loss interval.
    fit_cosine, fit_r2, cka, map_path
        Copied into the result.
    """
    native_logits = np.asarray(native_logits)
    mapped_logits = np.asarray(mapped_logits)
    if native_logits.shape != mapped_logits.shape:
        raise InputError(
            f"native logits {native_logits.shape} and mapped logits {mapped_logits.shape} "
            f"for {source} -> {target} must have the same shape (same samples, same classifier)"
        )
    n = int(native_logits.shape[0])
    res = PairResult(
        source=source,
        target=target,
        n=n,
        fit_cosine=fit_cosine,
        fit_r2=fit_r2,
        cka=cka,
        map_path=map_path,
    )
    res.agreement = metrics.agreement(
        metrics.predictions(native_logits), metrics.predictions(mapped_logits)
    )
    if labels is None:
        return res
    nat = metrics.topk_correct(native_logits, labels, 1)
    mapped = metrics.topk_correct(mapped_logits, labels, 1)
    k5 = min(5, native_logits.shape[1])
    res.correct = int(mapped.sum())
    res.native_correct = int(nat.sum())
    res.top5_correct = int(metrics.topk_correct(mapped_logits, labels, k5).sum())
    res.loss = metrics.loss_points(nat, mapped)
    res.loss_ci = metrics.bootstrap_loss_ci(nat, mapped, n_boot=n_boot, level=level, seed=seed)
    mc = metrics.mcnemar(nat, mapped)
    res.mcnemar_b, res.mcnemar_c = mc.b, mc.c
    res.mcnemar_statistic, res.mcnemar_p, res.mcnemar_method = mc.statistic, mc.p_value, mc.method
    return res
