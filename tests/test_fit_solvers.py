"""Planted maps are recovered by every solver, over several seeds."""

from __future__ import annotations

import numpy as np
import pytest

from xnetmap.fit import AffineMap
from xnetmap.fit.solvers import cholesky_solve, solve_lower, solve_upper


def planted(seed, n=6000, d_in=24, d_out=16, noise=0.01, orthogonal=False):
    rng = np.random.default_rng(seed)
    # correlated, off-centre sources (like ReLU features): whitening matters
    Q = np.linalg.qr(rng.standard_normal((d_in, d_in)))[0]
    mix = Q * (np.arange(1, d_in + 1) ** -0.5)[:, None]
    A = rng.standard_normal((n, d_in)) @ mix + rng.uniform(0.5, 2.0, d_in)
    if orthogonal:
        d = max(d_in, d_out)
        Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
        W = Q[:d_out, :d_in]
        A = rng.standard_normal((n, d_in)) * 2.0 + 1.0
    else:
        W = rng.standard_normal((d_out, d_in))
    b = rng.standard_normal(d_out) + 3.0
    Y = A @ W.T + b + noise * rng.standard_normal((n, d_out))
    return A.astype(np.float32), Y.astype(np.float32), W, b


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("solver", ["lstsq", "ridge", "gd"])
def test_planted_affine_map_recovered(solver, seed):
    A, Y, W, b = planted(seed)
    params = {"alpha": 1e-7} if solver == "ridge" else {}
    m = AffineMap(solver=solver, seed=seed, batch_size=512, epochs=30, **params).fit(A, Y)
    assert m.W_.shape == W.shape and m.b_.shape == b.shape
    tol = 0.02 if solver == "gd" else 2e-3
    assert np.max(np.abs(m.W_ - W)) < tol * np.max(np.abs(W)), np.max(np.abs(m.W_ - W))
    assert np.max(np.abs(m.b_ - b)) < 5 * tol * np.max(np.abs(b))
    assert m.metrics_["cosine"] > 0.9999 and m.metrics_["r2"] > 0.999
    if solver == "gd":
        assert len(m.history_) >= 1 and m.history_[-1]["holdout_loss"] < 1e-3


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", [(16, 16), (12, 20), (20, 12)])
def test_procrustes_recovers_planted_orthogonal_map(seed, shape):
    d_in, d_out = shape
    A, Y, W, b = planted(seed, d_in=d_in, d_out=d_out, orthogonal=True)
    m = AffineMap(solver="procrustes", calibrate="none", seed=seed).fit(A, Y)
    if d_in <= d_out:  # a square orthogonal block or an isometric embedding: exact
        np.testing.assert_allclose(m.W_, W, atol=5e-3)
        np.testing.assert_allclose(m.b_, b, atol=2e-2)
    # the fitted W is a block of an orthogonal matrix: singular values <= 1
    assert np.linalg.svd(m.W_, compute_uv=False).max() <= 1 + 1e-5


def test_ridge_shrinks_towards_zero():
    A, Y, _, _ = planted(3, noise=0.5)
    w0 = AffineMap(solver="lstsq", calibrate="none").fit(A, Y).W_
    w1 = AffineMap(solver="ridge", alpha=10.0, calibrate="none").fit(A, Y).W_
    assert np.linalg.norm(w1) < np.linalg.norm(w0)


def test_cholesky_and_triangular_solves():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((300, 300))
    S = M @ M.T + 300 * np.eye(300)
    B = rng.standard_normal((300, 7))
    Z, jitter = cholesky_solve(S, B)
    assert jitter == 0.0
    np.testing.assert_allclose(S @ Z, B, atol=1e-8)
    L = np.linalg.cholesky(S)
    np.testing.assert_allclose(L @ solve_lower(L, B, block=64), B, atol=1e-9)
    np.testing.assert_allclose(L.T @ solve_upper(L.T, B, block=64), B, atol=1e-9)


def test_singular_covariance_gets_jitter():
    A, Y, _, _ = planted(0, d_in=8)
    A = np.hstack([A, A[:, :1]])  # a duplicated column: singular normal equations
    m = AffineMap(solver="lstsq").fit(A, Y)
    assert m.info_["jitter"] > 0 and m.metrics_["r2"] > 0.999


def test_gd_lstsq_init_and_calibration_modes():
    A, Y, _, _ = planted(5, noise=0.05)
    ref = AffineMap(solver="lstsq", calibrate="none").fit(A, Y)
    warm = AffineMap(solver="gd", init="lstsq", epochs=2, batch_size=512).fit(A, Y)
    assert warm.metrics_["loss"] <= ref.metrics_["loss"] * (1 + 1e-6)  # warm start kept if best
    raw = AffineMap(solver="gd", calibrate="none", epochs=3, batch_size=512).fit(A, Y)
    cal = AffineMap(solver="gd", calibrate="scalar", epochs=3, batch_size=512).fit(A, Y)
    # same directions, the scalar calibration only rescales (and fixes the length)
    s = cal.calibration_["scale"]
    np.testing.assert_allclose(cal.W_, raw.W_ * s, rtol=1e-5, atol=1e-6)
    assert cal.metrics_["mse"] <= raw.metrics_["mse"] + 1e-9
    norm = AffineMap(solver="lstsq", calibrate="norm").fit(A, Y)
    out = norm.transform(A[:10])
    pred = A[:10] @ norm.calibration_["norm_w"] + norm.calibration_["norm_b"]
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), pred, rtol=1e-4)
