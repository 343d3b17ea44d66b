"""Metrics: planted correctness counts, the paper's loss, bootstrap interval, McNemar."""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import pytest

from xnetmap.errors import InputError
from xnetmap.study import statistics as metrics


def planted_logits(labels: np.ndarray, n_classes: int, correct_mask: np.ndarray, rng):
    """Logits whose argmax is the label exactly where correct_mask is True."""
    n = len(labels)
    L = rng.normal(size=(n, n_classes)).astype(np.float32)
    wrong = (labels + 1 + rng.integers(0, n_classes - 1, n)) % n_classes
    top = np.where(correct_mask, labels, wrong)
    L[np.arange(n), top] = L.max(axis=1) + 1.0 + rng.random(n).astype(np.float32)
    return L


def test_planted_top1_count_and_predictions():
    rng = np.random.default_rng(1)
    n, c = 1000, 7
    y = rng.integers(0, c, n)
    mask = rng.random(n) < 0.63
    L = planted_logits(y, c, mask, rng)
    correct = metrics.topk_correct(L, y, 1)
    assert correct.sum() == mask.sum()
    np.testing.assert_array_equal(correct, mask)
    np.testing.assert_array_equal(metrics.predictions(L) == y, mask)
    assert metrics.percent(correct) == pytest.approx(100.0 * mask.sum() / n)


def test_topk_matches_stable_sort_with_ties():
    rng = np.random.default_rng(2)
    n, c = 500, 9
    L = rng.integers(0, 4, size=(n, c)).astype(np.float32)  # many ties
    y = rng.integers(0, c, n)
    order = np.argsort(-L, axis=1, kind="stable")
    for k in (1, 2, 5, 9):
        expected = (order[:, :k] == y[:, None]).any(axis=1)
        np.testing.assert_array_equal(metrics.topk_correct(L, y, k), expected)
    assert metrics.topk_correct(L, y, 9).all()


def test_top5_hand_example():
    L = np.array([[9, 8, 7, 6, 5, 4, 3], [0, 1, 2, 3, 4, 5, 6]], dtype=np.float32)
    y = np.array([5, 1])  # rank 6 in row 0 (not top-5); rank 6 in row 1
    assert metrics.topk_correct(L, y, 5).tolist() == [False, False]
    y = np.array([4, 2])  # rank 5 in both
    assert metrics.topk_correct(L, y, 5).tolist() == [True, True]


def test_labels_out_of_range_is_clear():
    with pytest.raises(InputError, match="label space"):
        metrics.topk_correct(np.zeros((2, 3)), np.array([0, 3]), 1)
    with pytest.raises(InputError, match="shape"):
        metrics.topk_correct(np.zeros((2, 3)), np.array([0, 1, 2]), 1)


def test_loss_sign_and_points():
    native = np.zeros(100, bool)
    native[:80] = True
    mapped = np.zeros(100, bool)
    mapped[:75] = True
    assert metrics.loss_points(native, mapped) == pytest.approx(5.0)
    assert metrics.loss_points(mapped, native) == pytest.approx(-5.0)  # a gain
    # the paper's counts: ResNet native 39,022, Inception->ResNet 39,686 of 50,000
    nat = np.zeros(50_000, bool)
    nat[:39_022] = True
    mp = np.zeros(50_000, bool)
    mp[-39_686:] = True
    assert metrics.loss_points(nat, mp) == pytest.approx(100 * (39_022 - 39_686) / 50_000)


def test_agreement():
    a = np.array([0, 1, 2, 3, 4])
    b = np.array([0, 1, 0, 3, 0])
    assert metrics.agreement(a, b) == pytest.approx(0.6)
    with pytest.raises(InputError):
        metrics.agreement(a, b[:3])


def _paired_vectors(n, p_native, p_mapped, rng):
    u = rng.random(n)
    return u < p_native, u < p_mapped  # correlated, like the same images


def test_bootstrap_ci_contains_estimate_narrows_and_is_seeded():
    rng = np.random.default_rng(3)
    a, b = _paired_vectors(400, 0.8, 0.7, rng)
    lo, hi = metrics.bootstrap_loss_ci(a, b, n_boot=1000, seed=0)
    est = metrics.loss_points(a, b)
    assert lo <= est <= hi
    assert (lo, hi) == metrics.bootstrap_loss_ci(a, b, n_boot=1000, seed=0)
    assert (lo, hi) != metrics.bootstrap_loss_ci(a, b, n_boot=1000, seed=1)
    A, B = _paired_vectors(40_000, 0.8, 0.7, rng)
    lo2, hi2 = metrics.bootstrap_loss_ci(A, B, n_boot=1000, seed=0)
    assert (hi2 - lo2) < (hi - lo) / 5  # width ~ 1/sqrt(n): 100x the data, ~10x narrower
    # against the normal approximation of a paired mean difference
    d = A.astype(float) - B.astype(float)
    half = 1.959964 * 100 * d.std(ddof=1) / math.sqrt(len(d))
    assert (hi2 - lo2) / 2 == pytest.approx(half, rel=0.15)


def test_bootstrap_identical_vectors_is_zero_width():
    a = np.arange(100) % 3 == 0
    assert metrics.bootstrap_loss_ci(a, a, n_boot=200) == (0.0, 0.0)


def test_chi2_sf_textbook_critical_values():
    for x, p in [(3.841458820694124, 0.05), (6.634896601021214, 0.01), (10.827566170662733, 0.001)]:
        assert metrics.chi2_sf_1dof(x) == pytest.approx(p, rel=1e-9)
    assert metrics.chi2_sf_1dof(0.0) == 1.0


def test_binomial_tail_against_exact_fractions():
    for k, n in [(0, 1), (1, 10), (2, 12), (7, 30), (500, 1000)]:
        exact = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)
        assert metrics.binom_cdf_half(k, n) == pytest.approx(float(exact), rel=1e-10)


def test_mcnemar_exact_small_counts():
    # b = 1, c = 9: two-sided exact p = 2 * P(X <= 1 | n=10) = 2 * 11 / 1024
    native = np.array([True] * 1 + [False] * 9 + [True] * 50 + [False] * 40)
    mapped = np.array([False] * 1 + [True] * 9 + [True] * 50 + [False] * 40)
    r = metrics.mcnemar(native, mapped)
    assert (r.b, r.c, r.method) == (1, 9, "exact")
    assert r.p_value == pytest.approx(22 / 1024)
    assert metrics.mcnemar(native, native).p_value == 1.0


def test_mcnemar_chi_square_textbook():
    # Agresti's approval-rating example: b = 150, c = 86
    native = np.array([True] * 150 + [False] * 86 + [True] * 794 + [False] * 570)
    mapped = np.array([False] * 150 + [True] * 86 + [True] * 794 + [False] * 570)
    r = metrics.mcnemar(native, mapped)
    assert (r.b, r.c, r.method) == (150, 86, "chi2-cc")
    stat = (abs(150 - 86) - 1) ** 2 / (150 + 86)
    assert r.statistic == pytest.approx(stat)  # 16.818
    assert r.p_value == pytest.approx(2 * (1 - NormalDist().cdf(math.sqrt(stat))), rel=1e-6)
    assert 3e-5 < r.p_value < 6e-5


def test_bootstrap_matches_explicit_index_resampling():
    """The multinomial shortcut has the law of resampling indices: same quantiles (MC error)."""
    rng = np.random.default_rng(7)
    a, b = _paired_vectors(300, 0.75, 0.7, rng)
    lo, hi = metrics.bootstrap_loss_ci(a, b, n_boot=20_000, seed=1)
    d = a.astype(np.int8) - b.astype(np.int8)
    idx = np.random.default_rng(2).integers(0, len(d), size=(20_000, len(d)))
    ref = d[idx].mean(axis=1) * 100.0
    ref_lo, ref_hi = np.quantile(ref, [0.025, 0.975])
    step = 100.0 / len(d)  # the statistic moves on a grid of 1/n points
    assert abs(lo - ref_lo) <= 2 * step and abs(hi - ref_hi) <= 2 * step
