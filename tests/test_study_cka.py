"""Linear CKA streamed over chunks vs the n x n Gram formula, and planted invariances."""

from __future__ import annotations

import numpy as np
import pytest

from xnetmap.errors import InputError
from xnetmap.study.cka import CKAAccumulator, linear_cka, linear_cka_gram


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
