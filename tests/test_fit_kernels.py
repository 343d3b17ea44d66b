"""The paper's loss/gradient and the optimiser: analytic vs finite differences, twins vs reference.

CuPy tests compare each hand-written kernel with its NumPy twin; they skip
cleanly without a GPU. (On the CPU the CUDA sources themselves are compiled by
NVRTC and run through the C++ emulation: tests/test_fit_cuda_*.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xnetmap.backend import compute_device, has_cupy_gpu
from xnetmap.errors import InternalError
from xnetmap.fit.kernels import (
    LossGradWork,
    check_kernel_args,
    cuda_loss_grad,
    numpy_loss_grad,
    numpy_row_cosine,
    reference_loss_grad,
)
from xnetmap.fit.optim import cuda_nesterov, nesterov_step_numpy


def _pair(n=7, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_finite_differences(seed):
    pred, target = _pair(seed=seed)
    loss, grad = reference_loss_grad(pred, target)
    h = 1e-6
    fd = np.empty_like(pred)
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            Pp, Pm = pred.copy(), pred.copy()
            Pp[i, j] += h
            Pm[i, j] -= h
            up, down = reference_loss_grad(Pp, target)[0], reference_loss_grad(Pm, target)[0]
            fd[i, j] = (up[i] - down[i]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)
    # E = ||u - v||^2 = 2 - 2 cos
    cos = np.sum(target * pred, 1) / np.linalg.norm(target, axis=1) / np.linalg.norm(pred, axis=1)
    np.testing.assert_allclose(loss, 2 - 2 * cos, atol=1e-12)


def test_numpy_twin_matches_reference_and_is_in_place():
    pred, target = _pair(n=64, d=33, seed=4)
    P32, T32 = pred.astype(np.float32), target.astype(np.float32)
    work = LossGradWork(100, 33)
    G = P32.copy()
    loss, psq = numpy_loss_grad(G, T32, work, scale=0.25)
    ref_loss, ref_grad = reference_loss_grad(pred, target)
    np.testing.assert_allclose(loss, ref_loss, atol=2e-6)
    np.testing.assert_allclose(G, 0.25 * ref_grad, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(psq, np.sum(pred**2, 1), rtol=1e-5)


def test_zero_rows_are_finite_and_carry_no_gradient():
    pred, target = _pair(n=4, d=6)
    target[1] = 0.0  # zero target
    pred[2] = 0.0  # zero prediction
    P32, T32 = pred.astype(np.float32), target.astype(np.float32)
    loss, _ = numpy_loss_grad(P32, T32, LossGradWork(4, 6), scale=1.0)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(P32))
    assert np.all(P32[1] == 0) and np.all(P32[2] == 0)


@pytest.mark.parametrize("tiny", [1e-14, 1e-13, 5e-13])
def test_prediction_shorter_than_eps_gets_no_gradient_at_all(tiny):
    """0 < ||p|| <= eps: the whole row is gated (gating only alpha left a 2 scale/eps term)."""
    pred, target = _pair(n=3, d=8, seed=7)
    P32, T32 = pred.astype(np.float32), target.astype(np.float32)
    P32[1] = (tiny / np.sqrt(8)) * np.sign(T32[1])  # parallel to the target, norm ~ tiny
    loss, _ = numpy_loss_grad(P32, T32, LossGradWork(3, 8), scale=1.0)
    assert np.all(P32[1] == 0.0)
    assert np.all(np.isfinite(loss)) and 0.0 <= loss[1] <= 4.0
    assert np.any(P32[0] != 0.0)  # the other rows still get their gradient


def test_row_cosine_twin_is_float64_and_matches_reference():
    pred, target = _pair(n=20, d=9, seed=3)
    P32, T32 = pred.astype(np.float32), target.astype(np.float32)
    target_norm = np.linalg.norm(T32.astype(np.float64), axis=1)
    pred_norm = np.linalg.norm(P32.astype(np.float64), axis=1)
    ref = np.sum(T32.astype(np.float64) * P32, 1) / (target_norm * pred_norm)
    out = np.empty(32)
    got = numpy_row_cosine(P32, T32, out)
    assert got.dtype == np.float64 and got.shape == (20,)
    np.testing.assert_allclose(got, ref, rtol=1e-13)


def test_kernel_arguments_are_validated():
    """A float64 or non-contiguous array would be misread by a raw kernel: refused."""
    ok = np.zeros((4, 3), np.float32)
    row = np.zeros(4, np.float32)
    check_kernel_args(4, 3, pred=(ok, np.float32, (4, 3)), loss=(row, np.float32, (4,)))
    with pytest.raises(InternalError, match="'pred'.*float64"):
        check_kernel_args(4, 3, pred=(ok.astype(np.float64), np.float32, (4, 3)))
    with pytest.raises(InternalError, match="'target'.*C-contiguous"):
        check_kernel_args(4, 3, target=(np.zeros((3, 4), np.float32).T, np.float32, (4, 3)))
    with pytest.raises(InternalError, match="'loss'.*shape"):
        check_kernel_args(4, 3, loss=(np.zeros(5, np.float32), np.float32, (4,)))


_finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.data())
def test_property_numpy_loss_grad_matches_float64_reference(n, d, data):
    """Any finite rows whose norms are not tiny: the float32 twin stays close to float64."""
    pred = data.draw(arrays(np.float32, (n, d), elements=_finite))
    target = data.draw(arrays(np.float32, (n, d), elements=_finite))
    keep = (np.linalg.norm(pred.astype(np.float64), axis=1) > 1e-3) & \
        (np.linalg.norm(target.astype(np.float64), axis=1) > 1e-3)
    pred, target = pred[keep], target[keep]
    if not len(pred):
        return
    G = pred.copy()
    loss, psq = numpy_loss_grad(G, target, LossGradWork(n, d), scale=0.5)
    ref_loss, ref_grad = reference_loss_grad(pred, target)
    # the error of float32 dot products grows with d; relative to ||grad|| ~ 2/||p||
    scale = 2.0 / np.linalg.norm(pred.astype(np.float64), axis=1, keepdims=True)
    assert np.all(np.abs(loss - ref_loss) <= 1e-5 * d)
    assert np.all(np.abs(G - 0.5 * ref_grad) <= 1e-5 * d * scale)
    np.testing.assert_allclose(psq, np.sum(pred.astype(np.float64) ** 2, 1), rtol=1e-5 * d)
    assert np.all((loss >= 0) & (loss <= 4 + 1e-5))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.floats(1e-3, 1e3), st.integers(0, 2**31 - 1))
def test_property_gradient_is_orthogonal_to_prediction(d, magnitude, seed):
    """E depends only on the direction of p: dE/dp . p = 0, and E is scale invariant."""
    rng = np.random.default_rng(seed)
    pred = (magnitude * rng.standard_normal((4, d))).astype(np.float32)
    target = rng.standard_normal((4, d)).astype(np.float32)
    G = pred.copy()
    loss, _ = numpy_loss_grad(G, target, LossGradWork(4, d), scale=1.0)
    dots = np.einsum("ij,ij->i", G.astype(np.float64), pred)
    # ||dE/dp|| ||p|| is at most 4: the float32 rounding of G is relative to that
    assert np.all(np.abs(dots) <= 1e-5 * d)
    loss2, _ = numpy_loss_grad(3.0 * pred, target, LossGradWork(4, d), scale=1.0)
    np.testing.assert_allclose(loss2, loss, atol=1e-5 * d)


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
    dev = compute_device("cuda")
    cp = dev.xp
    rng = np.random.default_rng(d)
    pred = rng.standard_normal((300, d)).astype(np.float32)
    target = rng.standard_normal((300, d)).astype(np.float32)
    target[3] = 0.0
    pred[5] = 0.0
    Pd, Td = cp.asarray(pred), cp.asarray(target)
    loss_d, psq_d = cp.empty(300, np.float32), cp.empty(300, np.float32)
    cuda_loss_grad(dev)(Pd, Td, loss_d, psq_d, 1.0 / 300)
    loss, psq = numpy_loss_grad(pred, target, LossGradWork(300, d), scale=1.0 / 300)
    np.testing.assert_allclose(cp.asnumpy(loss_d), loss, atol=1e-5)
    np.testing.assert_allclose(cp.asnumpy(psq_d), psq, rtol=1e-5)
    np.testing.assert_allclose(cp.asnumpy(Pd), pred, rtol=1e-4, atol=1e-8)


@pytest.mark.gpu
@gpu
def test_cuda_nesterov_matches_numpy_twin():
    dev = compute_device("cuda")
    cp = dev.xp
    rng = np.random.default_rng(1)
    p, v, g = (rng.standard_normal((40, 30)).astype(np.float32) for _ in range(3))
    pd, vd = cp.asarray(p), cp.asarray(v)
    cuda_nesterov(dev)(cp.asarray(g), cp.asarray(np.array([0.05], np.float32)), np.float32(0.5),
                      pd, vd)
    nesterov_step_numpy(p, v, g, 0.05, 0.5, np.empty_like(p))
    np.testing.assert_allclose(cp.asnumpy(pd), p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cp.asnumpy(vd), v, rtol=1e-6, atol=1e-7)
