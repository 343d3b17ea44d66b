"""The paper's solver: minibatch gradient descent on the cosine loss.

Speed comes from three choices, the same on CPU and GPU:

* **Preconditioning = whitening folded into W.** The map is parametrised as
  ``y = W (a - m) + c`` (``m`` the source mean, so ``b = c - W m``) and the
  weight gradient is multiplied by ``S^-1``, the inverse source covariance
  estimated on a subsample. That is exactly gradient descent in the whitened
  input space ``z = L^-1 (a - m)``, carried out without ever transforming the
  data: the extra cost per step is one (d_out, d_in) x (d_in, d_in) product,
  small next to the two (batch, d_in) x (d_in, d_out) GEMMs.
* **Curvature-scaled step.** Near a good fit the loss's Hessian in ``y`` is
  about ``2/||y||^2`` across the directions orthogonal to ``y``, so the step is
  ``lr / mean(2/||y||^2)`` over the batch (``lr`` is dimensionless; 1 would jump
  to the minibatch's own Gauss-Newton solution).
* **Fused per-row maths and preallocated buffers**: per step the CPU loop calls
  two GEMMs into ``out=`` buffers, the fused loss/gradient twin, a column sum and
  the in-place optimiser; the GPU loop launches the RawKernel and the
  elementwise optimiser and only synchronises once per epoch (evaluation).

Minibatches are drawn without replacement from a seeded permutation (rows of
a store are often ordered by class, so contiguous batches would be biased); the
step size decays when the held-out loss stops improving and training stops
early after ``patience`` evaluations without improvement; the best held-out
parameters are kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .kernels import EPS, LossGradWork, cuda_loss_grad, numpy_loss_grad
from .optim import cuda_nesterov, nesterov_step_numpy
from .rows import iter_chunks, take_into


@dataclass
class GDConfig:
    """Hyperparameters of :func:`fit_gd` (see :class:`xnetmap.fit.AffineMap`)."""

    epochs: int = 20
    batch_size: int = 8192
    lr: float = 0.1
    momentum: float = 0.5
    seed: int = 0
    patience: int = 3
    decay: float = 0.5
    tol: float = 1e-3  # relative held-out improvement below which an epoch is a plateau
    eps: float = EPS
    whiten_ridge: float = 1e-4
    eval_init: bool = False  # evaluate the initial map and keep it if nothing beats it
    profile: bool = False  # time the two GEMMs inside the CPU loop (bench_fit.py)


@dataclass
class GDResult:
    """Output of :func:`fit_gd`."""

    W: np.ndarray
    b: np.ndarray
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


def holdout_loss(X: Any, Y: Any, rows: np.ndarray, W: np.ndarray, b: np.ndarray,
                 batch: int = 8192, eps: float = EPS) -> float:
    """Mean paper loss ``E`` of the map ``(W, b)`` over ``rows`` (host arrays, float64 sum)."""
    from .metrics import accumulate_metrics  # noqa: PLC0415

    return accumulate_metrics(X, Y, rows, W, b, batch=batch, eps=eps)["loss"]


def fit_gd(X: Any, Y: Any, train: np.ndarray, hold: np.ndarray, *, mean_x: np.ndarray,
           cov_xx: np.ndarray, W0: np.ndarray, b0: np.ndarray, cfg: GDConfig,
           xp: Any = np, on_epoch: Any = None) -> GDResult:
    """Run the minibatch loop.

    Parameters
    ----------
    X : array-like of shape (n, d_in)
        Source features (ndarray, memmap or row source).
    Y : array-like of shape (n, d_out)
        Target features.
    train, hold : ndarray of int64
        Sorted row indices used for the updates and for early stopping.
    mean_x : ndarray of shape (d_in,)
    cov_xx : ndarray of shape (d_in, d_in)
        Source mean and covariance (a subsample estimate is enough).
    W0 : ndarray of shape (d_out, d_in)
    b0 : ndarray of shape (d_out,)
        Initial map.
    cfg : GDConfig
    xp : module
        numpy or cupy (from :func:`xnetmap.backend.array_module`).
    on_epoch : callable, optional
        Called with each history record (host values) after every epoch.
    """
    from .solvers import cholesky_solve  # noqa: PLC0415

    d_in, d_out = X.shape[1], Y.shape[1]
    lam = cfg.whiten_ridge * float(np.mean(np.diag(cov_xx)) or 1.0)
    S_inv, _ = cholesky_solve(cov_xx + lam * np.eye(d_in), np.eye(d_in))
    S_inv = 0.5 * (S_inv + S_inv.T)

    f32 = np.float32
    B = int(min(cfg.batch_size, len(train)))
    W = xp.asarray(W0, dtype=f32)
    m = xp.asarray(mean_x, dtype=f32)
    c = xp.asarray(b0 + W0 @ mean_x, dtype=f32)
    Sinv = xp.asarray(S_inv, dtype=f32)
    vW, vc = xp.zeros_like(W), xp.zeros_like(c)
    gW, gP = xp.empty_like(W), xp.empty_like(W)
    gc = xp.empty_like(c)
    b = c - W @ m
    bufA = np.empty((B, d_in), f32)
    bufT = np.empty((B, d_out), f32)
    on_gpu = xp is not np
    dev_X = dev_Y = None
    if on_gpu:
        dev_X, dev_Y = _upload_if_fits(xp, X, Y)
        dA, dT = xp.empty((B, d_in), f32), xp.empty((B, d_out), f32)
        dP = xp.empty((B, d_out), f32)
        dloss, dysq = xp.empty(B, f32), xp.empty(B, f32)
        loss_grad = cuda_loss_grad(xp)
        nesterov = cuda_nesterov(xp)
        lr_dev = xp.empty(1, f32)
    else:
        dP = np.empty((B, d_out), f32)
        work = LossGradWork(B, d_out)
        tmpW, tmpc = np.empty_like(W), np.empty_like(c)

    if not on_gpu:  # target norms never change: one pass now saves one per step
        x_norm = np.zeros(Y.shape[0], f32)
        for idx, blk in iter_chunks(Y, train):
            x_norm[idx] = np.sqrt(np.einsum("ij,ij->i", blk, blk))
    profile = cfg.profile and not on_gpu
    rng = np.random.default_rng(cfg.seed)
    lr = float(cfg.lr)
    best = (np.inf, None, None)
    if cfg.eval_init and len(hold):  # a warm start is a candidate too: never return worse
        W_h, b_h = _to_host(W), _to_host(b)
        best = (holdout_loss(X, Y, hold, W_h, b_h, eps=cfg.eps), W_h, b_h)
    history: list[dict] = []
    bad_evals = 0
    stopped = False
    best_epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        perm = rng.permutation(train)
        # device-resident data: one index upload per epoch, no per-step host traffic
        perm_d = xp.asarray(perm) if dev_X is not None else None
        loss_sum = xp.zeros((), np.float64)
        gemm_s = 0.0
        for s in range(0, len(perm), B):
            idx = np.sort(perm[s : s + B])  # sorted: sequential reads of host memory/memmaps
            n = len(idx)
            if dev_X is not None:  # whole matrices on the device: gather there
                idx_d = perm_d[s : s + n]
                A, T = dA[:n], dT[:n]
                xp.take(dev_X, idx_d, axis=0, out=A)
                xp.take(dev_Y, idx_d, axis=0, out=T)
            else:
                A = take_into(X, idx, bufA)
                T = take_into(Y, idx, bufT)
                if on_gpu:
                    A, T = dA[:n], dT[:n]
                    A.set(bufA[:n])
                    T.set(bufT[:n])
            P = dP[:n]
            if profile:
                tg = time.perf_counter()
            xp.matmul(A, W.T, out=P)
            if profile:
                gemm_s += time.perf_counter() - tg
            P += b
            if on_gpu:
                loss, ysq = dloss[:n], dysq[:n]
                loss_grad(P, T, loss, ysq, 1.0 / n, cfg.eps)
            else:
                loss, ysq = numpy_loss_grad(P, T, work, scale=1.0 / n, eps=cfg.eps,
                                            x_norm=x_norm[idx])
            loss_sum += loss.sum(dtype=np.float64)
            if profile:
                tg = time.perf_counter()
            xp.matmul(P.T, A, out=gW)
            if profile:
                gemm_s += time.perf_counter() - tg
            xp.sum(P, axis=0, out=gc)
            # centred parametrisation: d/dW of W (a - m) = G^T A - g_c m^T
            gW -= gc[:, None] * m[None, :]
            xp.matmul(gW, Sinv, out=gP)
            # step = lr / mean(2 / ||y||^2)
            if on_gpu:
                lr_dev[...] = lr * n / (2.0 * xp.sum(1.0 / ysq))
                nesterov(gP, lr_dev, f32(cfg.momentum), W, vW)
                nesterov(gc, lr_dev, f32(cfg.momentum), c, vc)
            else:
                step = lr * n / (2.0 * float(np.sum(1.0 / ysq, dtype=np.float64)))
                nesterov_step_numpy(W, vW, gP, step, cfg.momentum, tmpW)
                nesterov_step_numpy(c, vc, gc, step, cfg.momentum, tmpc)
            xp.subtract(c, W @ m, out=b)
        train_time = time.perf_counter() - t0 if not on_gpu else None
        W_h, b_h = _to_host(W), _to_host(b)  # the per-epoch synchronisation
        if on_gpu:
            train_time = time.perf_counter() - t0
        if not len(hold):
            hold_loss = np.nan
        elif dev_X is not None:
            hold_loss = _device_loss(xp, dev_X, dev_Y, hold, W, b, dP, dloss, dysq, loss_grad,
                                     cfg.eps)
        else:
            hold_loss = holdout_loss(X, Y, hold, W_h, b_h, eps=cfg.eps)
        rec = {"epoch": epoch, "train_loss": float(loss_sum) / len(perm),
               "holdout_loss": float(hold_loss), "lr": lr, "epoch_seconds": train_time,
               "seconds": time.perf_counter() - t0}
        if profile:
            rec["gemm_seconds"] = gemm_s
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
        score = hold_loss if len(hold) else rec["train_loss"]
        progressed = score < best[0] * (1.0 - cfg.tol)
        if score < best[0]:
            best = (score, W_h.copy(), b_h.copy())
            best_epoch = epoch
        if progressed:
            bad_evals = 0
        else:  # a plateau: minibatch noise dominates, so shrink the step
            bad_evals += 1
            lr *= cfg.decay
            if bad_evals >= cfg.patience:
                stopped = True
                break
    if best[1] is None:  # no finite evaluation: keep the last parameters
        best = (np.nan, W_h, b_h)
    return GDResult(best[1].astype(np.float64), best[2].astype(np.float64), history,
                    best_epoch, stopped)


def _upload_if_fits(xp: Any, X: Any, Y: Any) -> tuple[Any, Any]:
    """Copy X and Y to the device when they take under 60% of its free memory."""
    need = X.shape[0] * (X.shape[1] + Y.shape[1]) * 4
    free = xp.cuda.Device().mem_info[0]
    if need > 0.6 * free:
        return None, None
    rows = np.arange(X.shape[0], dtype=np.int64)
    out = []
    for M in (X, Y):
        D = xp.empty(M.shape, np.float32)
        for idx, blk in iter_chunks(M, rows):
            D[idx[0] : idx[-1] + 1].set(np.ascontiguousarray(blk))
        out.append(D)
    return out[0], out[1]


def _device_loss(xp: Any, dev_X: Any, dev_Y: Any, hold: np.ndarray, W: Any, b: Any, dP: Any,
                 dloss: Any, dysq: Any, loss_grad: Any, eps: float) -> float:
    """Mean held-out loss computed on the device with the fused kernel (one sync)."""
    B = dP.shape[0]
    total = xp.zeros((), np.float64)
    hold_d = xp.asarray(hold)
    for s in range(0, len(hold), B):
        idx = hold_d[s : s + B]
        n = len(idx)
        P = dP[:n]
        xp.matmul(xp.take(dev_X, idx, axis=0), W.T, out=P)
        P += b
        loss_grad(P, xp.take(dev_Y, idx, axis=0), dloss[:n], dysq[:n], 1.0, eps)
        total += dloss[:n].sum(dtype=np.float64)
    return float(total) / len(hold)


def _to_host(a: Any) -> np.ndarray:
    from ..backend import to_numpy  # noqa: PLC0415

    return np.array(to_numpy(a), dtype=np.float32, copy=True)
