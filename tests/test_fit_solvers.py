"""Planted maps are recovered by every solver, over several seeds."""

from __future__ import annotations

import numpy as np
import pytest

from xnetmap.fit import AffineMap
from xnetmap.fit.solvers import RCOND, cholesky_solve, solve_psd


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


def psd_with_spectrum(eigenvalues, seed=0):
    """A symmetric matrix with the given eigenvalues and a random eigenbasis (float64)."""
    d = len(eigenvalues)
    V = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0]
    return (V * np.asarray(eigenvalues, float)) @ V.T, V


@pytest.mark.parametrize("condition", [1e2, 1e10])
def test_solve_psd_well_and_near_singular(condition):
    d = 120
    lam = np.logspace(0, -np.log10(condition), d)
    A, _ = psd_with_spectrum(lam, seed=1)
    Z_true = np.random.default_rng(2).standard_normal((d, 5))
    B = A @ Z_true
    Z, info = solve_psd(A, B)
    assert np.isfinite(Z).all()
    # forward error bounded by condition * eps (1e10 * 2.2e-16 ~ 2e-6); full rank either way
    np.testing.assert_allclose(Z, Z_true, rtol=0, atol=condition * 1e-13 * np.abs(Z_true).max())
    assert info["rank"] == d and info["dim"] == d
    # the reported condition: exact (2-norm) or LAPACK's 1-norm estimate, within a factor d
    assert condition / 2 <= info["condition"] <= condition * d
    assert cholesky_solve(A, B)[1] == 0.0  # nothing cut


def test_solve_psd_exactly_singular_gives_minimum_norm_solution():
    d, r = 60, 45
    lam = np.r_[np.logspace(0, -3, r), np.zeros(d - r)]
    A, V = psd_with_spectrum(lam, seed=3)
    rng = np.random.default_rng(4)
    B = A @ rng.standard_normal((d, 3))  # consistent right-hand side, in A's range
    Z, info = solve_psd(A, B)
    Vr = V[:, :r]
    Z_min = Vr @ ((Vr.T @ B) / lam[:r, None])  # the minimum-norm solution
    assert np.isfinite(Z).all()
    np.testing.assert_allclose(Z, Z_min, atol=1e-8 * np.abs(Z_min).max())
    np.testing.assert_allclose(A @ Z, B, atol=1e-10 * np.abs(B).max())
    assert info["rank"] == r and 0 < info["eigenvalue_cutoff"] <= RCOND * 1.0001
    assert cholesky_solve(A, B)[1] == info["eigenvalue_cutoff"]
    # a zero matrix: rank 0, the zero solution, no division by zero
    Z0, info0 = solve_psd(np.zeros((4, 4)), np.ones((4, 1)))
    assert info0["rank"] == 0 and not Z0.any()


def test_solve_psd_refuses_non_finite():
    from xnetmap.errors import InputError

    with pytest.raises(InputError, match="NaN or infinity"):
        solve_psd(np.array([[1.0, 0], [0, np.nan]]), np.ones((2, 1)))


def test_duplicated_column_gets_minimum_norm_map():
    """Exactly singular normal equations (a duplicated feature): the weight is shared."""
    A, Y, W, b = planted(0, d_in=8)
    A = np.hstack([A, A[:, :1]])
    m = AffineMap(solver="lstsq", calibrate="none").fit(A, Y)
    assert np.isfinite(m.W_).all() and m.metrics_["r2"] > 0.999
    # the minimum-norm solution splits column 0's weight evenly between the two copies
    np.testing.assert_allclose(m.W_[:, 0], m.W_[:, 8], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(m.W_[:, 0] + m.W_[:, 8], W[:, 0], atol=5e-3 * np.abs(W).max())
    np.testing.assert_allclose(m.W_[:, 1:8], W[:, 1:], atol=5e-3 * np.abs(W).max())
    assert m.info_["rank"] == 8 and m.info_["ridge"] == 0.0
    meta = m.metadata()["info"]
    assert meta["rank"] == 8 and meta["eigenvalue_cutoff"] > 0


def test_near_singular_features_fit_finite_and_accurate():
    """Covariance of condition ~2e10 (a feature that nearly copies another)."""
    rng = np.random.default_rng(7)
    A, Y, W, b = planted(1, d_in=8)
    near = A[:, :1].astype(np.float64) + 1e-5 * rng.standard_normal((len(A), 1))
    A2 = np.hstack([A, near.astype(np.float32)])
    m = AffineMap(solver="lstsq", calibrate="none").fit(A2, Y)
    assert 1e9 < m.info_["condition"] < 1e12
    assert np.isfinite(m.W_).all() and m.metrics_["r2"] > 0.999
    # predictions equal the planted map's; the two near-copies share column 0's weight
    np.testing.assert_allclose(m.W_[:, 0] + m.W_[:, 8], W[:, 0], atol=5e-3 * np.abs(W).max())
    assert np.abs(m.W_).max() < 100 * np.abs(W).max()
    assert m.info_["rank"] == 9


def test_constant_features_give_the_mean_map():
    A, Y, _, _ = planted(2, d_in=4)
    A[:] = 3.0
    m = AffineMap(solver="lstsq", calibrate="none", holdout=0).fit(A, Y)
    assert m.info_["rank"] == 0 and not m.W_.any()
    np.testing.assert_allclose(m.b_, Y.mean(axis=0, dtype=np.float64), rtol=1e-5)


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
