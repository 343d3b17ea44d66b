"""Linear CKA streamed over chunks vs the n x n Gram formula, and planted invariances."""

from __future__ import annotations

import numpy as np
import pytest

from xnetmap.errors import InputError
from xnetmap.study.cka import (
    CKAAccumulator,
    linear_cka,
    linear_cka_gram,
    linear_cka_summary,
    too_few_samples,
)


def gram_cka(X, Y):
    """Independent reference: centred Gram matrices, HSIC ratio."""
    X = np.asarray(X, float)
    Y = np.asarray(Y, float)
    K = X @ X.T
    L = Y @ Y.T
    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    hsic = lambda A, B: np.trace(A @ H @ B @ H)  # noqa: E731
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def unbiased_hsic(K, L):
    """Song et al. (2012), eq. 5, written with n x n matrices (the reference)."""
    n = len(K)
    K = K - np.diag(np.diag(K))
    L = L - np.diag(np.diag(L))
    one = np.ones(n)
    return (
        np.trace(K @ L)
        + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ K @ L @ one)
    ) / (n * (n - 3))


def gram_cka_debiased(X, Y):
    """Independent reference for the debiased linear CKA: n x n Gram matrices, centred data."""
    X = np.asarray(X, float) - np.mean(X, axis=0)
    Y = np.asarray(Y, float) - np.mean(Y, axis=0)
    K, L = X @ X.T, Y @ Y.T
    return unbiased_hsic(K, L) / np.sqrt(unbiased_hsic(K, K) * unbiased_hsic(L, L))


@pytest.mark.parametrize("n", [5, 9, 40, 300])
def test_debiased_matches_gram_reference(n):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 7)) * rng.uniform(0.1, 3, 7) + 20.0  # far from zero, anisotropic
    Y = X @ rng.normal(size=(7, 12)) + 0.8 * rng.normal(size=(n, 12)) - 4.0
    ref = gram_cka_debiased(X, Y)
    for chunk in (1000, 13, 2):
        got = linear_cka(X, Y, chunk_size=chunk, debiased=True)
        assert got == pytest.approx(ref, rel=1e-8, abs=1e-10)
    keep = np.arange(n) % 4 != 1
    got = linear_cka(X, Y, chunk_size=3, valid=keep, debiased=True)
    assert got == pytest.approx(gram_cka_debiased(X[keep], Y[keep]), rel=1e-8, abs=1e-10)


def test_debiased_is_not_inflated_by_few_samples():
    """Issue 11 case 7: 6 samples of 1280-d unrelated features give a biased CKA near 1."""
    rng = np.random.default_rng(11)
    X, Y = rng.normal(size=(6, 1280)), rng.normal(size=(6, 1280))
    s = linear_cka_summary(X, Y)
    assert s.cka > 0.95 and s.too_few_samples
    assert s.n == 6 and (s.d1, s.d2) == (1280, 1280)
    assert s.cka_debiased == pytest.approx(gram_cka_debiased(X, Y), rel=1e-8)
    # over many draws the debiased estimate of unrelated features centres on 0
    vals = [linear_cka(rng.normal(size=(50, 100)), rng.normal(size=(50, 100)), debiased=True)
            for _ in range(40)]
    assert abs(np.mean(vals)) < 0.05 and min(vals) < 0 < max(vals)
    assert linear_cka(rng.normal(size=(50, 100)), rng.normal(size=(50, 100))) > 0.6


def test_too_few_samples_flag():
    assert too_few_samples(6, 1280, 3) and too_few_samples(6399, 1280, 1000)
    assert not too_few_samples(6400, 1280, 1000)
    acc = CKAAccumulator()
    assert acc.too_few_samples
    acc.update(np.ones((10, 2)), np.ones((10, 1)))
    assert not acc.too_few_samples
    acc = CKAAccumulator().update(np.arange(9.0).reshape(3, 3), np.ones((3, 3)))
    assert np.isnan(acc.debiased())  # n < 4: undefined


def test_matches_gram_formula_on_random_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 7))
    Y = X @ rng.normal(size=(7, 12)) + 0.8 * rng.normal(size=(60, 12)) + 3.0
    ref = gram_cka(X, Y)
    assert 0.2 < ref < 0.99
    for chunk in (1000, 13, 2):
        assert linear_cka(X, Y, chunk_size=chunk) == pytest.approx(ref, abs=1e-10)
    assert linear_cka_gram(X, Y) == pytest.approx(ref, abs=1e-10)


def test_rotation_scaling_and_shift_invariance():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 16)).astype(np.float32)
    Q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert linear_cka(X, X @ Q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(X, 3.7 * X @ Q + 100.0, chunk_size=64) == pytest.approx(1.0, abs=1e-9)
    X = X.astype(np.float64)
    Y = rng.normal(size=(500, 8))
    base = linear_cka(X, Y)
    assert linear_cka(X * 5.0, Y) == pytest.approx(base, abs=1e-12)
    # a large common offset must not cancel badly (features far from zero)
    assert linear_cka(X + 1e6, Y, chunk_size=50) == pytest.approx(base, abs=1e-6)


def test_anisotropic_scaling_is_not_invariant():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 6))
    D = np.diag([10.0, 1, 1, 1, 1, 0.1])
    assert linear_cka(X, X @ D) < 0.9


def test_independent_features_score_low():
    rng = np.random.default_rng(3)
    assert linear_cka(rng.normal(size=(5000, 10)), rng.normal(size=(5000, 10))) < 0.05


def test_valid_mask_and_accumulator():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(100, 5))
    Y = X[:, :3] ** 2 + rng.normal(size=(100, 3))
    keep = rng.random(100) < 0.7
    assert linear_cka(X, Y, valid=keep, chunk_size=9) == pytest.approx(
        gram_cka(X[keep], Y[keep]), abs=1e-10
    )
    acc = CKAAccumulator()
    for s in range(0, 100, 30):
        acc.update(X[s : s + 30], Y[s : s + 30])
    assert acc.n == 100
    assert acc.result() == pytest.approx(gram_cka(X, Y), abs=1e-10)


def test_errors():
    with pytest.raises(InputError, match="same samples"):
        linear_cka(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(InputError, match="at least 2"):
        CKAAccumulator().update(np.ones((1, 2)), np.ones((1, 2))).result()
    acc = CKAAccumulator().update(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(InputError, match="widths changed"):
        acc.update(np.ones((3, 4)), np.ones((3, 2)))
    assert np.isnan(linear_cka(np.ones((10, 3)), np.arange(20.0).reshape(10, 2)))
