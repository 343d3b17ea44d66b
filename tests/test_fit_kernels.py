"""The paper's loss/gradient and the optimiser: analytic vs finite differences, twins vs reference.

CuPy tests compare each hand-written kernel with its NumPy twin; they skip
cleanly without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from xnetmap.backend import array_module, has_cupy_gpu
from xnetmap.fit.kernels import (
    LossGradWork,
    cuda_loss_grad,
    numpy_loss_grad,
    reference_loss_grad,
)
from xnetmap.fit.optim import cuda_nesterov, nesterov_step_numpy


def _pair(n=7, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_finite_differences(seed):
    Y, X = _pair(seed=seed)
    loss, grad = reference_loss_grad(Y, X)
    h = 1e-6
    fd = np.empty_like(Y)
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Yp, Ym = Y.copy(), Y.copy()
            Yp[i, j] += h
            Ym[i, j] -= h
            up, down = reference_loss_grad(Yp, X)[0], reference_loss_grad(Ym, X)[0]
            fd[i, j] = (up[i] - down[i]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)
    # E = ||t - u||^2 = 2 - 2 cos
    cos = np.sum(X * Y, 1) / np.linalg.norm(X, axis=1) / np.linalg.norm(Y, axis=1)
    np.testing.assert_allclose(loss, 2 - 2 * cos, atol=1e-12)


def test_numpy_twin_matches_reference_and_is_in_place():
    Y, X = _pair(n=64, d=33, seed=4)
    Y32, X32 = Y.astype(np.float32), X.astype(np.float32)
    work = LossGradWork(100, 33)
    G = Y32.copy()
    loss, ysq = numpy_loss_grad(G, X32, work, scale=0.25)
    ref_loss, ref_grad = reference_loss_grad(Y, X)
    np.testing.assert_allclose(loss, ref_loss, atol=2e-6)
    np.testing.assert_allclose(G, 0.25 * ref_grad, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(ysq, np.sum(Y**2, 1), rtol=1e-5)


def test_zero_rows_are_finite_and_carry_no_gradient():
    Y, X = _pair(n=4, d=6)
    X[1] = 0.0  # zero target
    Y[2] = 0.0  # zero prediction
    Y32, X32 = Y.astype(np.float32), X.astype(np.float32)
    loss, _ = numpy_loss_grad(Y32, X32, LossGradWork(4, 6), scale=1.0)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(Y32))
    assert np.all(Y32[1] == 0) and np.all(Y32[2] == 0)


def test_nesterov_twin_matches_formula():
    rng = np.random.default_rng(0)
    p, v, g = (rng.standard_normal((5, 3)).astype(np.float32) for _ in range(3))
    p0, v0 = p.copy(), v.copy()
    nesterov_step_numpy(p, v, g, 0.1, 0.9, np.empty_like(p))
    v_ref = 0.9 * v0 + g
    np.testing.assert_allclose(v, v_ref, rtol=1e-6)
    np.testing.assert_allclose(p, p0 - 0.1 * (g + 0.9 * v_ref), rtol=1e-6)


gpu = pytest.mark.skipif(not has_cupy_gpu(), reason="needs CuPy and a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("d", [7, 256, 768, 2048])
def test_cuda_kernel_matches_numpy_twin(d):
    cp = array_module("cuda")
    rng = np.random.default_rng(d)
    Y = rng.standard_normal((300, d)).astype(np.float32)
    X = rng.standard_normal((300, d)).astype(np.float32)
    X[3] = 0.0
    Y[5] = 0.0
    Yd, Xd = cp.asarray(Y), cp.asarray(X)
    loss_d, ysq_d = cp.empty(300, np.float32), cp.empty(300, np.float32)
    cuda_loss_grad(cp)(Yd, Xd, loss_d, ysq_d, 1.0 / 300)
    loss, ysq = numpy_loss_grad(Y, X, LossGradWork(300, d), scale=1.0 / 300)
    np.testing.assert_allclose(cp.asnumpy(loss_d), loss, atol=1e-5)
    np.testing.assert_allclose(cp.asnumpy(ysq_d), ysq, rtol=1e-5)
    np.testing.assert_allclose(cp.asnumpy(Yd), Y, rtol=1e-4, atol=1e-8)


@pytest.mark.gpu
@gpu
def test_cuda_nesterov_matches_numpy_twin():
    cp = array_module("cuda")
    rng = np.random.default_rng(1)
    p, v, g = (rng.standard_normal((40, 30)).astype(np.float32) for _ in range(3))
    pd, vd = cp.asarray(p), cp.asarray(v)
    cuda_nesterov(cp)(cp.asarray(g), cp.asarray(np.array([0.05], np.float32)), np.float32(0.5),
                      pd, vd)
    nesterov_step_numpy(p, v, g, 0.05, 0.5, np.empty_like(p))
    np.testing.assert_allclose(cp.asnumpy(pd), p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cp.asnumpy(vd), v, rtol=1e-6, atol=1e-7)
