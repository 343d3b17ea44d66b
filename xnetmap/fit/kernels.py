"""The paper's loss and its gradient: fused CUDA kernels and their NumPy twins.

McNeely-White et al. (2019) fit the map by gradient descent on

    E(t, p) = || t/||t|| - p/||p|| ||^2

with ``t`` the true target feature vector and ``p = W a + b`` the prediction
(the paper writes them ``x`` and ``y``; here ``X``/``Y`` mean the fit's source
and target matrices, as in ``AffineMap.fit(X, Y)``, so the kernels say
``target`` and ``pred``). With ``u = t/||t||``, ``v = p/||p||`` and ``c = u.v``:

    E = 2 - 2 c,        dE/dp = -2 (u - c v) / ||p||
                               = alpha t + beta p,
    alpha = -2 / (||t|| ||p||),   beta = 2 c / ||p||^2.

Both norms are clamped below by ``eps`` so a zero row gives a finite loss
instead of NaN. A prediction with ``||p|| <= eps`` has no defined direction:
its whole gradient row is zero (both ``alpha`` and ``beta``; gating only
``alpha`` left ``beta p`` as large as ``2 scale / eps``). The kernel writes the
gradient (times ``scale``, normally ``1/batch``) over the prediction buffer in
place, the per-row loss, and ``||p||^2`` per row (used to set the step size, see
:mod:`xnetmap.fit.gd`). Float32 throughout, so every element's magnitude must
stay below about 1e18 (its square must not overflow).

``row_cosine`` gives the held-out loss: the cosine per row accumulated in
float64, on both devices, so the early-stopping decision is the same on both.

The CUDA sources are compiled by the device object of :mod:`xnetmap.backend`
(the only module that imports CuPy); the tests compile every source with NVRTC
and run it on the CPU through a C++ emulation of the CUDA thread model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InternalError

EPS = 1e-12

#: One block per row; each thread strides over the row accumulating t.t, p.p and
#: t.p, then a shared-memory tree reduction (blockDim.x must be a power of two).
#: Every thread then rewrites its own elements of the row, so ``grad`` may alias ``pred``.
COSINE_LOSS_GRAD_SRC = r"""
extern "C" __global__
void cosine_loss_grad(const float* pred, const float* __restrict__ target,
                      float* grad, float* __restrict__ loss, float* __restrict__ psq,
                      const int n, const int d, const float scale, const float eps)
{
    extern __shared__ float sh[];
    const int row = blockIdx.x;
    const int tid = threadIdx.x;
    const int bd = blockDim.x;
    const size_t off = (size_t)row * (size_t)d;
    float stt = 0.f, spp = 0.f, stp = 0.f;
    for (int j = tid; j < d; j += bd) {
        const float tv = target[off + j];
        const float pv = pred[off + j];
        stt += tv * tv;
        spp += pv * pv;
        stp += tv * pv;
    }
    sh[tid] = stt;
    sh[bd + tid] = spp;
    sh[2 * bd + tid] = stp;
    __syncthreads();
    for (int s = bd >> 1; s > 0; s >>= 1) {
        if (tid < s) {
            sh[tid] += sh[tid + s];
            sh[bd + tid] += sh[bd + tid + s];
            sh[2 * bd + tid] += sh[2 * bd + tid + s];
        }
        __syncthreads();
    }
    const float nt = fmaxf(sqrtf(sh[0]), eps);
    const float np_raw = sqrtf(sh[bd]);
    const float npd = fmaxf(np_raw, eps);
    const float c = sh[2 * bd] / (nt * npd);
    if (tid == 0) {
        loss[row] = fmaxf(2.f - 2.f * c, 0.f);
        psq[row] = npd * npd;
    }
    // a prediction too short to have a direction gets no gradient at all
    const bool ok = np_raw > eps;
    const float alpha = ok ? -2.f * scale / (nt * npd) : 0.f;
    const float beta = ok ? 2.f * scale * c / (npd * npd) : 0.f;
    for (int j = tid; j < d; j += bd) {
        grad[off + j] = alpha * target[off + j] + beta * pred[off + j];
    }
}
"""

#: The cosine of each row pair, products and sums in float64 (the held-out loss).
ROW_COSINE_SRC = r"""
extern "C" __global__
void row_cosine(const float* __restrict__ pred, const float* __restrict__ target,
                double* __restrict__ cosine, const int n, const int d, const double eps)
{
    extern __shared__ double shd[];
    const int row = blockIdx.x;
    const int tid = threadIdx.x;
    const int bd = blockDim.x;
    const size_t off = (size_t)row * (size_t)d;
    double stt = 0.0, spp = 0.0, stp = 0.0;
    for (int j = tid; j < d; j += bd) {
        const double tv = (double)target[off + j];
        const double pv = (double)pred[off + j];
        stt += tv * tv;
        spp += pv * pv;
        stp += tv * pv;
    }
    shd[tid] = stt;
    shd[bd + tid] = spp;
    shd[2 * bd + tid] = stp;
    __syncthreads();
    for (int s = bd >> 1; s > 0; s >>= 1) {
        if (tid < s) {
            shd[tid] += shd[tid + s];
            shd[bd + tid] += shd[bd + tid + s];
            shd[2 * bd + tid] += shd[2 * bd + tid + s];
        }
        __syncthreads();
    }
    if (tid == 0) {
        cosine[row] = shd[2 * bd] / (fmax(sqrt(shd[0]), eps) * fmax(sqrt(shd[bd]), eps));
    }
}
"""

#: Threads per block of both kernels (a power of two: the tree reductions need it).
CUDA_THREADS = 256
#: Every RawKernel source of this module by kernel name (the NVRTC test compiles each).
RAW_KERNELS = {"cosine_loss_grad": COSINE_LOSS_GRAD_SRC, "row_cosine": ROW_COSINE_SRC}


_VECDOT = getattr(np, "vecdot", None)  # NumPy >= 2.0


def row_dot(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[i] = a[i] . b[i]`` (NumPy's ``vecdot`` where it exists: about twice as fast
    as ``einsum`` on this kernel's chunks; ``einsum`` on older NumPy)."""
    if _VECDOT is not None:
        return _VECDOT(a, b, out=out)
    return np.einsum("ij,ij->i", a, b, out=out)


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
        self.stt = np.empty(batch, np.float32)
        self.spp = np.empty(batch, np.float32)
        self.stp = np.empty(batch, np.float32)
        self.alpha = np.empty(batch, np.float32)
        self.beta = np.empty(batch, np.float32)
        self.loss = np.empty(batch, np.float32)
        self.ok = np.empty(batch, bool)
        self.tmp = np.empty((batch, d_out), np.float32)


def numpy_loss_grad(
    pred: np.ndarray, target: np.ndarray, work: LossGradWork, *, scale: float,
    eps: float = EPS, target_norm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of ``cosine_loss_grad``: loss per row and dE/dpred, in place.

    Parameters
    ----------
    pred : ndarray of shape (n, d_out), float32
        Predictions; overwritten with ``scale * dE/dpred``.
    target : ndarray of shape (n, d_out), float32
        True target vectors.
    work : LossGradWork
        Buffers with room for ``n`` rows.
    scale : float
        Multiplies the gradient (``1/batch`` for a mean loss).
    eps : float
        Lower bound on both norms.
    target_norm : ndarray of shape (n,), optional
        ``||t||`` per row when already known (target norms do not change between
        epochs, so the fit computes them once and saves a pass per step).

    Returns
    -------
    loss : ndarray of shape (n,)
        ``E`` per row (a view into ``work``).
    psq : ndarray of shape (n,)
        ``||p||^2`` per row after the eps clamp (a view into ``work``).
    """
    n = pred.shape[0]
    stt, spp, stp = work.stt[:n], work.spp[:n], work.stp[:n]
    alpha, beta, loss = work.alpha[:n], work.beta[:n], work.loss[:n]
    tmp = work.tmp[:n]
    if target_norm is None:
        row_dot(target, target, stt)
        np.sqrt(stt, out=stt)
    else:
        stt[...] = target_norm
    row_dot(pred, pred, spp)
    row_dot(target, pred, stp)
    np.maximum(stt, eps, out=stt)  # nt
    np.sqrt(spp, out=spp)
    ok = np.greater(spp, eps, out=work.ok[:n])
    np.maximum(spp, eps, out=spp)  # np
    np.multiply(stt, spp, out=alpha)  # nt*np
    np.divide(stp, alpha, out=stp)  # c
    np.multiply(stp, -2.0, out=loss)
    loss += 2.0
    np.maximum(loss, 0.0, out=loss)
    np.divide(-2.0 * scale, alpha, out=alpha)
    np.multiply(spp, spp, out=spp)  # np^2
    np.divide(stp, spp, out=beta)
    beta *= 2.0 * scale
    alpha *= ok  # undefined direction of a (near) zero prediction: no gradient at all
    beta *= ok
    np.multiply(target, alpha[:, None], out=tmp)
    np.multiply(pred, beta[:, None], out=pred)
    pred += tmp
    return loss, spp


def numpy_row_cosine(pred: np.ndarray, target: np.ndarray, out: np.ndarray,
                     eps: float = EPS) -> np.ndarray:
    """NumPy twin of ``row_cosine``: ``out[i] = cos(pred_i, target_i)`` in float64.

    Parameters
    ----------
    pred, target : ndarray of shape (n, d), float32
    out : ndarray of shape (>= n,), float64
    """
    n = pred.shape[0]
    nt = np.maximum(np.sqrt(np.einsum("ij,ij->i", target, target, dtype=np.float64)), eps)
    npr = np.maximum(np.sqrt(np.einsum("ij,ij->i", pred, pred, dtype=np.float64)), eps)
    np.divide(np.einsum("ij,ij->i", target, pred, dtype=np.float64), nt * npr, out=out[:n])
    return out[:n]


def reference_loss_grad(pred: np.ndarray, target: np.ndarray,
                        eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """Plain, unfused float64 reference of the loss and dE/dpred (tests only).

    The loss is ``2 - 2 c`` with both norms clamped at ``eps``, as in the kernels
    and :mod:`.metrics`: equal to ``||u - v||^2`` whenever both norms exceed ``eps``,
    and 2 (orthogonal) for a zero row.
    """
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    nt = np.maximum(np.linalg.norm(target, axis=1, keepdims=True), eps)
    np_raw = np.linalg.norm(pred, axis=1, keepdims=True)
    npr = np.maximum(np_raw, eps)
    u, v = target / nt, pred / npr
    c = np.sum(u * v, axis=1, keepdims=True)
    loss = np.maximum(2.0 - 2.0 * c[:, 0], 0.0)
    grad = np.where(np_raw > eps, -2.0 * (u - c * v) / npr, 0.0)
    return loss, grad


def check_kernel_args(rows: int, width: int, **arrays: Any) -> None:
    """Refuse what a raw kernel would misread: wrong dtype, layout or shape.

    Each keyword is ``name=(array, dtype, shape)``; ``shape`` is ``(rows, width)``
    or ``(rows,)`` written with the literal values.

    Raises
    ------
    InternalError
        Naming the argument, what it is and what the kernel needs.
    """
    for name, (a, dtype, shape) in arrays.items():
        got = (getattr(a, "dtype", None), tuple(getattr(a, "shape", ())))
        if got[0] != np.dtype(dtype) or got[1] != shape:
            raise InternalError(f"kernel argument {name!r}: dtype {got[0]}, shape {got[1]}; "
                                f"the kernel needs {np.dtype(dtype)} of shape {shape}")
        if not a.flags.c_contiguous:
            raise InternalError(f"kernel argument {name!r} (shape {got[1]}) is not "
                                "C-contiguous; the kernel would read the wrong elements")
    if rows >= 2**31 or width >= 2**31:
        raise InternalError(f"kernel launch of {rows} x {width}: each must be below 2**31")


def cuda_loss_grad(device: Any) -> Any:
    """Compile ``cosine_loss_grad`` on ``device`` (a backend device); returns a launcher.

    The launcher ``f(pred, target, loss, psq, scale, eps)`` overwrites ``pred``
    (float32, C-contiguous, shape (n, d)) with ``scale * dE/dpred`` and fills
    ``loss``/``psq`` (float32, shape (n,)). Asynchronous: nothing is synchronised.
    """
    kernel = device.raw_kernel(COSINE_LOSS_GRAD_SRC, "cosine_loss_grad")

    def launch(pred: Any, target: Any, loss: Any, psq: Any, scale: float,
               eps: float = EPS) -> None:
        n, d = pred.shape
        f32 = np.float32
        check_kernel_args(n, d, pred=(pred, f32, (n, d)), target=(target, f32, (n, d)),
                          loss=(loss, f32, (n,)), psq=(psq, f32, (n,)))
        if n == 0:
            return
        kernel((n,), (CUDA_THREADS,),
               (pred, target, pred, loss, psq, np.int32(n), np.int32(d), f32(scale), f32(eps)),
               shared_mem=3 * CUDA_THREADS * 4)

    return launch


def cuda_row_cosine(device: Any) -> Any:
    """Compile ``row_cosine`` on ``device``; returns ``f(pred, target, out, eps)``."""
    kernel = device.raw_kernel(ROW_COSINE_SRC, "row_cosine")

    def launch(pred: Any, target: Any, out: Any, eps: float = EPS) -> Any:
        n, d = pred.shape
        check_kernel_args(n, d, pred=(pred, np.float32, (n, d)),
                          target=(target, np.float32, (n, d)), out=(out, np.float64, (n,)))
        if n:
            kernel((n,), (CUDA_THREADS,),
                   (pred, target, out, np.int32(n), np.int32(d), np.float64(eps)),
                   shared_mem=3 * CUDA_THREADS * 8)
        return out

    return launch
