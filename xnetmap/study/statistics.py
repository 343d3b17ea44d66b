"""Classification metrics of a study: correctness, the paper's loss, agreement, intervals, tests.

Everything here works on plain arrays (logits, labels, boolean correctness
vectors) so that it can be checked by hand. Percentages and losses are in
points (0..100), as in the paper's Table 1.

The paper's directional loss (McNeely-White et al. 2019, Sect. 3), for source
A and target B (features of A mapped into B's space, labelled by B's classifier)::

    Loss_{B,A} = Acc(C_B(F_B)) - Acc(C_B(M_{A->B} F_A))

A negative loss is a gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xnetmap.errors import InputError

# rows per chunk when ranking logits (bounds the temporary (chunk, n_classes) arrays)
_RANK_CHUNK = 8192


def _as_logits(logits, name: str = "logits") -> np.ndarray:
    arr = np.asarray(logits)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise InputError(
            f"{name} must be a 2-D array (n_samples, n_classes); got shape {arr.shape}"
        )
    return arr


def _as_labels(labels, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"labels must have shape ({n},) to match the logits; got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be integers; got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(
            f"labels must lie in [0, {n_classes}) to index {n_classes} logits; "
            f"found values in [{int(y.min())}, {int(y.max())}]: the label space of the "
            "dataset does not match the classifier's output"
        )
    return y.astype(np.int64, copy=False)


def predictions(logits) -> np.ndarray:
    """Top-1 predicted class of each sample.

    Parameters
    ----------
    logits : ndarray of shape (n_samples, n_classes)

    Returns
    -------
    ndarray of shape (n_samples,), int64
        ``argmax`` over classes; ties go to the lowest class index.
    """
    return np.argmax(_as_logits(logits), axis=1).astype(np.int64)


def topk_correct(logits, labels, k: int = 1) -> np.ndarray:
    """Whether the true label is among the ``k`` highest logits.

    Ties are broken like a stable sort on descending logits (the lower class
    index ranks first), so ``k=1`` agrees exactly with :func:`predictions`.

    Parameters
    ----------
    logits : ndarray of shape (n_samples, n_classes)
    labels : ndarray of shape (n_samples,), int
    k : int

    Returns
    -------
    ndarray of shape (n_samples,), bool
    """
    L = _as_logits(logits)
    n, c = L.shape
    y = _as_labels(labels, n, c)
    if k < 1:
        raise InputError(f"k must be >= 1; got {k}")
    if k == 1:
        return np.argmax(L, axis=1) == y
    out = np.empty(n, dtype=bool)
    cls = np.arange(c)
    for s in range(0, n, _RANK_CHUNK):
        Lc = np.asarray(L[s : s + _RANK_CHUNK])
        yc = y[s : s + _RANK_CHUNK]
        ly = Lc[np.arange(len(yc)), yc][:, None]
        # rank of the true class = classes strictly above it + equal ones with a lower index
        rank = (Lc > ly).sum(axis=1) + ((Lc == ly) & (cls[None, :] < yc[:, None])).sum(axis=1)
        out[s : s + _RANK_CHUNK] = rank < k
    return out


def percent(correct) -> float:
    """Percentage of True entries (0..100); NaN for an empty vector."""
    c = np.asarray(correct, dtype=bool)
    return float(100.0 * c.mean()) if c.size else float("nan")


def loss_points(native_correct, mapped_correct) -> float:
    """The paper's loss in points: ``Acc(C_B(F_B)) - Acc(C_B(M F_A))``; negative = gain.

    Parameters
    ----------
    native_correct : ndarray of shape (n_samples,), bool
        Correctness of B's classifier on B's own features.
    mapped_correct : ndarray of shape (n_samples,), bool
        Correctness of B's classifier on A's features mapped into B's space.
    """
    a, b = _paired(native_correct, mapped_correct)
    if a.size == 0:
        return float("nan")
    return float(100.0 * (a.sum() - b.sum()) / a.size)


def agreement(pred_a, pred_b) -> float:
    """Label-free agreement: fraction (0..1) of samples where two prediction vectors agree.

    Parameters
    ----------
    pred_a, pred_b : ndarray of shape (n_samples,), int
    """
    a = np.asarray(pred_a).ravel()
    b = np.asarray(pred_b).ravel()
    if a.shape != b.shape:
        raise InputError(f"prediction vectors differ in length: {a.shape[0]} vs {b.shape[0]}")
    return float((a == b).mean()) if a.size else float("nan")


def _paired(native_correct, mapped_correct) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(native_correct, dtype=bool).ravel()
    b = np.asarray(mapped_correct, dtype=bool).ravel()
    if a.shape != b.shape:
        raise InputError(
            f"paired correctness vectors differ in length: {a.shape[0]} vs {b.shape[0]}"
        )
    return a, b


def bootstrap_loss_ci(
    native_correct,
    mapped_correct,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired percentile bootstrap interval of the loss, in points.

    Each replicate draws one set of sample indices with replacement and uses it
    for both correctness vectors, so the pairing (same image, two classifiers'
    inputs) is kept.

    Parameters
    ----------
    native_correct, mapped_correct : ndarray of shape (n_samples,), bool
    n_boot : int
        Number of bootstrap replicates.
    level : float
        Coverage of the interval, in (0, 1).
    seed : int
        Seed of ``numpy.random.default_rng``; the same inputs and seed give the same interval.

    Returns
    -------
    (low, high) : tuple of float
        NaN, NaN for an empty input.
    """
    a, b = _paired(native_correct, mapped_correct)
    if not 0.0 < level < 1.0:
        raise InputError(f"level must be in (0, 1); got {level}")
    if n_boot < 1:
        raise InputError(f"n_boot must be >= 1; got {n_boot}")
    n = a.size
    if n == 0:
        return float("nan"), float("nan")
    # per-sample difference in {-1, 0, 1}; a replicate's loss is the mean over n indices
    # drawn with replacement, so it depends only on how many draws land on a +1 and on a
    # -1 sample: one multinomial draw per replicate has exactly that law (O(n_boot), not
    # O(n_boot * n) index draws)
    d = a.astype(np.int8) - b.astype(np.int8)
    counts = np.array([np.sum(d == 1), np.sum(d == -1), 0], dtype=np.int64)
    counts[2] = n - counts[0] - counts[1]
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=n_boot)
    stats = (draws[:, 0] - draws[:, 1]) * (100.0 / n)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- McNemar


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test between two paired correctness vectors.

    Attributes
    ----------
    b : int
        Native correct, mapped wrong.
    c : int
        Native wrong, mapped correct.
    statistic : float
        Chi-square statistic with continuity correction, or ``min(b, c)`` for the exact test.
    p_value : float
        Two-sided p-value.
    method : str
        ``"exact"`` (binomial) or ``"chi2-cc"`` (chi-square, 1 dof, continuity corrected).
    """

    b: int
    c: int
    statistic: float
    p_value: float
    method: str


def chi2_sf_1dof(x: float) -> float:
    """Survival function of the chi-square distribution with one degree of freedom.

    ``P(X > x) = P(|Z| > sqrt(x)) = erfc(sqrt(x / 2))`` for standard normal Z.
    """
    if x <= 0:
        return 1.0
    return math.erfc(math.sqrt(x / 2.0))


def binom_cdf_half(k: int, n: int) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, 1/2)``, summed in log space (stable for large n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    log_half_n = n * math.log(0.5)
    lgn = math.lgamma(n + 1)
    terms = [lgn - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n for i in range(k + 1)]
    m = max(terms)
    return min(1.0, math.exp(m) * math.fsum(math.exp(t - m) for t in terms))


def mcnemar(native_correct, mapped_correct, *, exact_below: int = 25) -> McNemarResult:
    """McNemar's test of whether two paired classifiers' accuracies differ.

    Uses the exact two-sided binomial test when the number of discordant pairs
    ``b + c`` is below ``exact_below``, else the chi-square statistic with
    Edwards' continuity correction ``max(0, |b - c| - 1)^2 / (b + c)``.

    Parameters
    ----------
    native_correct, mapped_correct : ndarray of shape (n_samples,), bool
    exact_below : int

    Returns
    -------
    McNemarResult
    """
    a, m = _paired(native_correct, mapped_correct)
    b = int(np.count_nonzero(a & ~m))
    c = int(np.count_nonzero(~a & m))
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 0.0, 1.0, "exact")
    if n < exact_below:
        k = min(b, c)
        p = min(1.0, 2.0 * binom_cdf_half(k, n))
        return McNemarResult(b, c, float(k), p, "exact")
    stat = max(0.0, abs(b - c) - 1.0) ** 2 / n
    return McNemarResult(b, c, float(stat), chi2_sf_1dof(stat), "chi2-cc")
