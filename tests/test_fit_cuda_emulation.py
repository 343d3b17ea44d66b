"""The fit's CUDA kernels run on the CPU (C++ emulation of blocks, threads, shared
memory and __syncthreads) and agree with their NumPy twins.

The launchers of :mod:`xnetmap.fit.kernels` and :mod:`xnetmap.fit.optim` are
used unchanged: only the device object that compiles the source is the
emulation's (tests/cudaemu/). Skips when the machine has no C++ compiler.
"""

from __future__ import annotations

import numpy as np
import pytest
from cudaemu.emulate import EmuElementwiseKernel, EmuRawKernel, cxx

from xnetmap.errors import InternalError
from xnetmap.fit.kernels import (
    LossGradWork,
    cuda_loss_grad,
    cuda_row_cosine,
    numpy_loss_grad,
    numpy_row_cosine,
    reference_loss_grad,
)
from xnetmap.fit.optim import cuda_nesterov, nesterov_step_numpy

pytestmark = pytest.mark.skipif(cxx() is None, reason="no C++ compiler (g++ or clang++) "
                                "to build the CUDA emulation")

NS = [1, 3, 1000]
DS = [1, 7, 255, 256, 257, 2048]


class EmuDevice:
    """The part of a backend device the launchers use, with emulated kernels."""

    def __init__(self, fibers: bool = True):
        self.fibers = fibers

    def raw_kernel(self, source, name):
        return EmuRawKernel(source, name, self.fibers)

    def elementwise_kernel(self, in_params, out_params, body, name):
        return EmuElementwiseKernel(in_params, out_params, body, name)


@pytest.fixture(scope="module")
def loss_grad():
    return cuda_loss_grad(EmuDevice())


@pytest.fixture(scope="module")
def row_cosine():
    return cuda_row_cosine(EmuDevice())


def _rows(n, d, seed, kind="normal"):
    """Predictions and targets with the edge cases of issue 13 planted in them."""
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal((n, d)).astype(np.float32)
    target = rng.standard_normal((n, d)).astype(np.float32)
    if kind == "edges" and n >= 3:
        target[0] = 0.0  # zero target
        pred[1] = 0.0  # zero prediction
        pred[2] *= np.float32(1e-14) / np.linalg.norm(pred[2])  # 0 < ||p|| <= eps
    if kind == "huge":
        pred *= np.float32(1e15)
        target *= np.float32(1e15)
    if kind == "tiny":
        pred *= np.float32(1e-15)
        target *= np.float32(1e-15)
    return pred, target


def _compare(loss_grad, pred, target, scale):
    n, d = pred.shape
    G = pred.copy()  # the fit's use: the gradient overwrites the prediction buffer
    loss, psq = np.empty(n, np.float32), np.empty(n, np.float32)
    loss_grad(G, target, loss, psq, scale)
    G2 = pred.copy()
    loss2, psq2 = numpy_loss_grad(G2, target, LossGradWork(n, d), scale=scale)
    assert np.all(np.isfinite(G)) and np.all(np.isfinite(loss)) and np.all(np.isfinite(psq))
    # summation orders differ (tree vs einsum): float32 rounding, relative to each row's
    # gradient scale 2 scale / ||p||
    pnorm = np.maximum(np.linalg.norm(pred.astype(np.float64), axis=1, keepdims=True), 1e-12)
    assert np.all(np.abs(G - G2) <= 1e-4 * 2.0 * scale / pnorm)
    np.testing.assert_allclose(loss, loss2, atol=2e-5)
    np.testing.assert_allclose(psq, psq2, rtol=1e-4)
    ref_loss, ref_grad = reference_loss_grad(pred, target)
    np.testing.assert_allclose(loss, ref_loss, atol=2e-5)
    gated = np.linalg.norm(pred.astype(np.float64), axis=1) <= 1e-12
    assert np.all(G[gated] == 0) and np.all(G2[gated] == 0)  # no direction: no gradient
    return G


@pytest.mark.parametrize("d", DS)
@pytest.mark.parametrize("n", NS)
def test_loss_grad_kernel_matches_twin(loss_grad, n, d):
    pred, target = _rows(n, d, seed=n * 10_000 + d, kind="edges")
    G = _compare(loss_grad, pred, target, 1.0 / n)
    if n >= 3:
        assert np.all(G[0] == 0) and np.all(G[1] == 0) and np.all(G[2] == 0)


@pytest.mark.parametrize("kind", ["huge", "tiny"])
@pytest.mark.parametrize("d", [7, 257, 2048])
def test_loss_grad_kernel_extreme_magnitudes(loss_grad, kind, d):
    """|v| ~ 1e15 (squares near 1e33) and ~ 1e-15 (squares near 1e-27): still finite, equal."""
    pred, target = _rows(3, d, seed=d, kind=kind)
    _compare(loss_grad, pred, target, 1.0 / 3)


def test_loss_grad_kernel_on_os_threads():
    """Real concurrency: every block on 256 std::threads with a std::barrier."""
    f = cuda_loss_grad(EmuDevice(fibers=False))
    for n, d in [(1, 1), (3, 257)]:
        pred, target = _rows(n, d, seed=d, kind="edges")
        _compare(f, pred, target, 0.5)


def test_launcher_refuses_what_the_kernel_would_misread(loss_grad):
    pred, target = _rows(3, 5, seed=0)
    loss, psq = np.empty(3, np.float32), np.empty(3, np.float32)
    with pytest.raises(InternalError, match="'target'"):
        loss_grad(pred, target.astype(np.float64), loss, psq, 1.0)
    with pytest.raises(InternalError, match="C-contiguous"):
        loss_grad(np.asfortranarray(pred), target, loss, psq, 1.0)
    with pytest.raises(InternalError, match="'psq'"):
        loss_grad(pred, target, loss, np.empty(4, np.float32), 1.0)
    empty = np.empty((0, 5), np.float32)
    loss_grad(empty, empty, np.empty(0, np.float32), np.empty(0, np.float32), 1.0)  # no launch


@pytest.mark.parametrize("d", DS)
@pytest.mark.parametrize("n", [1, 3, 1000])
def test_row_cosine_kernel_matches_twin(row_cosine, n, d):
    pred, target = _rows(n, d, seed=d + n, kind="edges")
    got = row_cosine(pred, target, np.empty(n, np.float64))
    want = numpy_row_cosine(pred, target, np.empty(n, np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", [(1,), (7,), (257, 3), (2048, 255)])
def test_nesterov_elementwise_kernel_matches_twin(shape):
    k = cuda_nesterov(EmuDevice())
    rng = np.random.default_rng(len(shape))
    p, v, g = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    p2, v2 = p.copy(), v.copy()
    lr = np.array([0.05], np.float32)
    k(g, lr, np.float32(0.5), p, v)
    nesterov_step_numpy(p2, v2, g, lr, np.float32(0.5), np.empty_like(p2))
    np.testing.assert_array_equal(p, p2)
    np.testing.assert_array_equal(v, v2)


def test_emulation_catches_a_missing_syncthreads():
    """The harness can fail: drop the barrier inside the reduction and the sums go wrong."""
    from xnetmap.fit.kernels import COSINE_LOSS_GRAD_SRC

    tail = "            sh[2 * bd + tid] += sh[2 * bd + tid + s];\n        }"
    broken = COSINE_LOSS_GRAD_SRC.replace(tail + "\n        __syncthreads();", tail)
    assert broken != COSINE_LOSS_GRAD_SRC

    class Broken(EmuDevice):
        def raw_kernel(self, source, name):
            return EmuRawKernel(broken, name)

    pred, target = _rows(2, 1000, seed=1)
    with pytest.raises(AssertionError):
        _compare(cuda_loss_grad(Broken()), pred, target, 0.5)
