"""The paper's loss and its gradient: a fused CUDA kernel and its NumPy twin.

McNeely-White et al. (2019) fit the map by gradient descent on

    E(x, y) = || x/||x|| - y/||y|| ||^2

with ``x`` the true target feature vector and ``y = W a + b`` the prediction.
With ``t = x/||x||``, ``u = y/||y||`` and ``c = t.u``:

    E = 2 - 2 c,        dE/dy = -2 (t - c u) / ||y||
                               = alpha x + beta y,
    alpha = -2 / (||x|| ||y||),   beta = 2 c / ||y||^2.

Both norms are clamped below by ``eps`` so a zero row gives a finite loss
instead of NaN, and a zero-length prediction (where the direction, hence the
gradient, is undefined) gets a zero gradient rather than a ``1/eps`` one. The
kernel writes the gradient (times ``scale``, normally ``1/batch``) over the
prediction buffer in place, the per-row loss, and ``||y||^2`` per row (used to
set the step size, see :mod:`xnetmap.fit.gd`).

The CUDA source is compiled through ``cp.RawKernel`` by :func:`cuda_loss_grad`;
``cp`` always comes from :func:`xnetmap.backend.array_module`, never imported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-12

#: One block per row; each thread strides over the row accumulating x.x, y.y and
#: x.y, then a shared-memory tree reduction (blockDim.x must be a power of two).
#: Every thread then rewrites its own elements of the row, so ``g`` may alias ``y``.
COSINE_LOSS_GRAD_SRC = r"""
extern "C" __global__
void cosine_loss_grad(const float* y, const float* __restrict__ x,
                      float* g, float* __restrict__ loss, float* __restrict__ ysq,
                      const int n, const int d, const float scale, const float eps)
{
    extern __shared__ float sh[];
    const int row = blockIdx.x;
    if (row >= n) return;
    const int tid = threadIdx.x;
    const int bd = blockDim.x;
    const size_t off = (size_t)row * (size_t)d;
    float sxx = 0.f, syy = 0.f, sxy = 0.f;
    for (int j = tid; j < d; j += bd) {
        const float xv = x[off + j];
        const float yv = y[off + j];
        sxx += xv * xv;
        syy += yv * yv;
        sxy += xv * yv;
    }
    sh[tid] = sxx;
    sh[bd + tid] = syy;
    sh[2 * bd + tid] = sxy;
    __syncthreads();
    for (int s = bd >> 1; s > 0; s >>= 1) {
        if (tid < s) {
            sh[tid] += sh[tid + s];
            sh[bd + tid] += sh[bd + tid + s];
            sh[2 * bd + tid] += sh[2 * bd + tid + s];
        }
        __syncthreads();
    }
    const float nx = fmaxf(sqrtf(sh[0]), eps);
    const float ny_raw = sqrtf(sh[bd]);
    const float ny = fmaxf(ny_raw, eps);
    const float c = sh[2 * bd] / (nx * ny);
    if (tid == 0) {
        loss[row] = fmaxf(2.f - 2.f * c, 0.f);
        ysq[row] = ny * ny;
    }
    const float alpha = (ny_raw > eps) ? -2.f * scale / (nx * ny) : 0.f;
    const float beta = 2.f * scale * c / (ny * ny);
    for (int j = tid; j < d; j += bd) {
        g[off + j] = alpha * x[off + j] + beta * y[off + j];
    }
}
"""

CUDA_THREADS = 256


class LossGradWork:
    """Preallocated per-batch buffers for :func:`numpy_loss_grad`.

    Parameters
    ----------
    batch : int
        Largest batch the buffers must hold.
    d_out : int
        Target feature width.
    """

    def __init__(self, batch: int, d_out: int):
        self.sxx = np.empty(batch, np.float32)
        self.syy = np.empty(batch, np.float32)
        self.sxy = np.empty(batch, np.float32)
        self.alpha = np.empty(batch, np.float32)
        self.beta = np.empty(batch, np.float32)
        self.loss = np.empty(batch, np.float32)
        self.ok = np.empty(batch, bool)
        self.tmp = np.empty((batch, d_out), np.float32)


def numpy_loss_grad(
    Y: np.ndarray, X: np.ndarray, work: LossGradWork, *, scale: float, eps: float = EPS,
    x_norm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of ``cosine_loss_grad``: loss per row and dE/dY, in place.

    Parameters
    ----------
    Y : ndarray of shape (n, d_out), float32
        Predictions; overwritten with ``scale * dE/dY``.
    X : ndarray of shape (n, d_out), float32
        True target vectors.
    work : LossGradWork
        Buffers with room for ``n`` rows.
    scale : float
        Multiplies the gradient (``1/batch`` for a mean loss).
    eps : float
        Lower bound on both norms.
    x_norm : ndarray of shape (n,), optional
        ``||x||`` per row when already known (target norms do not change between
        epochs, so the fit computes them once and saves a pass per step).

    Returns
    -------
    loss : ndarray of shape (n,)
        ``E`` per row (a view into ``work``).
    ysq : ndarray of shape (n,)
        ``||y||^2`` per row after the eps clamp (a view into ``work``).
    """
    n = Y.shape[0]
    sxx, syy, sxy = work.sxx[:n], work.syy[:n], work.sxy[:n]
    alpha, beta, loss = work.alpha[:n], work.beta[:n], work.loss[:n]
    tmp = work.tmp[:n]
    if x_norm is None:
        np.einsum("ij,ij->i", X, X, out=sxx)
        np.sqrt(sxx, out=sxx)
    else:
        sxx[...] = x_norm
    np.einsum("ij,ij->i", Y, Y, out=syy)
    np.einsum("ij,ij->i", X, Y, out=sxy)
    np.maximum(sxx, eps, out=sxx)  # nx
    np.sqrt(syy, out=syy)
    ok = np.greater(syy, eps, out=work.ok[:n])
    np.maximum(syy, eps, out=syy)  # ny
    np.multiply(sxx, syy, out=alpha)  # nx*ny
    np.divide(sxy, alpha, out=sxy)  # c
    np.multiply(sxy, -2.0, out=loss)
    loss += 2.0
    np.maximum(loss, 0.0, out=loss)
    np.divide(-2.0 * scale, alpha, out=alpha)
    alpha *= ok  # undefined direction of a zero prediction: no gradient
    np.multiply(syy, syy, out=syy)  # ny^2
    np.divide(sxy, syy, out=beta)
    beta *= 2.0 * scale
    np.multiply(X, alpha[:, None], out=tmp)
    np.multiply(Y, beta[:, None], out=Y)
    Y += tmp
    return loss, syy


def reference_loss_grad(Y: np.ndarray, X: np.ndarray,
                        eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """Plain, unfused float64 reference of the loss and dE/dY (tests only)."""
    Y = np.asarray(Y, np.float64)
    X = np.asarray(X, np.float64)
    nx = np.maximum(np.linalg.norm(X, axis=1, keepdims=True), eps)
    ny = np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), eps)
    t, u = X / nx, Y / ny
    c = np.sum(t * u, axis=1, keepdims=True)
    loss = np.sum((t - u) ** 2, axis=1)
    grad = -2.0 * (t - c * u) / ny
    return loss, grad


def cuda_loss_grad(cp: Any) -> Any:
    """Compile (once per process, cached by CuPy) the RawKernel; returns a launcher.

    The launcher ``f(Y, X, loss, ysq, scale, eps)`` overwrites ``Y`` (float32,
    C-contiguous, shape (n, d)) with ``scale * dE/dY`` and fills ``loss``/``ysq``
    (float32, shape (n,)). Asynchronous: nothing is synchronised.
    """
    kernel = cp.RawKernel(COSINE_LOSS_GRAD_SRC, "cosine_loss_grad")

    def launch(Y: Any, X: Any, loss: Any, ysq: Any, scale: float, eps: float = EPS) -> None:
        n, d = Y.shape
        kernel(
            (n,),
            (CUDA_THREADS,),
            (Y, X, Y, loss, ysq, np.int32(n), np.int32(d), np.float32(scale), np.float32(eps)),
            shared_mem=3 * CUDA_THREADS * 4,
        )

    return launch
