"""Closed-form solvers: least squares, ridge and orthogonal Procrustes.

All three work from sufficient statistics accumulated in float64 chunk by chunk
(out of core): counts, sums and the cross products of the *shifted* data (the
first chunk's mean is subtracted before multiplying, which keeps the float64
sums well conditioned for features with large means, such as ReLU outputs).
The linear systems are solved by Cholesky (``numpy.linalg.cholesky``) and two
triangular solves; SciPy is not a dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .rows import iter_pairs


@dataclass
class Moments:
    """Centred first and second moments of the inputs (and their cross moments).

    Attributes
    ----------
    n : int
        Rows accumulated.
    mean_x : ndarray of shape (d_in,)
    mean_y : ndarray of shape (d_out,)
    cov_xx : ndarray of shape (d_in, d_in)
        Biased (divide by n) covariance of the source features.
    cov_xy : ndarray of shape (d_in, d_out) or None
        Cross covariance (None when only the source side was accumulated).
    """

    n: int
    mean_x: np.ndarray
    mean_y: np.ndarray
    cov_xx: np.ndarray
    cov_xy: np.ndarray | None


def accumulate_moments(X: Any, Y: Any, rows: np.ndarray, *, cross: bool = True) -> Moments:
    """Stream ``rows`` of ``X`` (source) and ``Y`` (target) into float64 moments."""
    d_in, d_out = X.shape[1], Y.shape[1]
    sxx = np.zeros((d_in, d_in))
    sxy = np.zeros((d_in, d_out)) if cross else None
    sx, sy = np.zeros(d_in), np.zeros(d_out)
    shift_x = shift_y = None
    n = 0
    for _, a, y in iter_pairs(X, Y, rows):
        a64 = a.astype(np.float64)
        y64 = y.astype(np.float64)
        if shift_x is None:
            shift_x, shift_y = a64.mean(axis=0), y64.mean(axis=0)
        a64 -= shift_x
        y64 -= shift_y
        sxx += a64.T @ a64
        if cross:
            sxy += a64.T @ y64
        sx += a64.sum(axis=0)
        sy += y64.sum(axis=0)
        n += len(a64)
    if n == 0:
        raise InputError("no usable rows to fit on (all rows masked, zero or held out)")
    mx, my = sx / n, sy / n
    cov_xx = sxx / n - np.outer(mx, mx)
    cov_xy = sxy / n - np.outer(mx, my) if cross else None
    return Moments(n, shift_x + mx, shift_y + my, cov_xx, cov_xy)


def solve_lower(L: np.ndarray, B: np.ndarray, block: int = 128) -> np.ndarray:
    """Solve ``L Z = B`` for lower-triangular ``L`` by blocked forward substitution."""
    n = L.shape[0]
    Z = np.array(B, dtype=np.float64, copy=True)
    for s in range(0, n, block):
        e = min(s + block, n)
        if s:
            Z[s:e] -= L[s:e, :s] @ Z[:s]
        Z[s:e] = _small_lower(L[s:e, s:e], Z[s:e])
    return Z


def solve_upper(U: np.ndarray, B: np.ndarray, block: int = 128) -> np.ndarray:
    """Solve ``U Z = B`` for upper-triangular ``U`` by blocked back substitution."""
    return solve_lower(U[::-1, ::-1], B[::-1], block)[::-1]


def _small_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    Z = np.empty_like(B)
    for i in range(L.shape[0]):
        Z[i] = (B[i] - L[i, :i] @ Z[:i]) / L[i, i]
    return Z


def cholesky_solve(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, float]:
    """Solve ``A Z = B`` for symmetric positive (semi)definite ``A``.

    A singular ``A`` (collinear or constant features) gets a growing diagonal
    jitter, starting at 1e-12 of its mean diagonal, until Cholesky succeeds.

    Returns
    -------
    Z : ndarray, same shape as ``B``
    jitter : float
        The diagonal added (0.0 when none was needed).
    """
    scale = float(np.mean(np.diag(A))) or 1.0
    jitter = 0.0
    for k in range(14):
        try:
            L = np.linalg.cholesky(A + jitter * np.eye(len(A)))
            break
        except np.linalg.LinAlgError:
            jitter = scale * 10.0 ** (-12 + k)
    else:
        raise InputError("the source features' covariance is not positive definite even with "
                         "a large ridge; are the features constant?")
    return solve_upper(L.T, solve_lower(L, B)), jitter


def solve_ridge(m: Moments, alpha: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Affine least squares with a ridge ``alpha * mean(diag(cov_xx))`` on W only.

    Returns
    -------
    W : ndarray of shape (d_out, d_in), float64
    b : ndarray of shape (d_out,), float64
    info : dict
        ``{"ridge": ..., "jitter": ...}``.
    """
    lam = alpha * float(np.mean(np.diag(m.cov_xx)))
    A = m.cov_xx + lam * np.eye(len(m.cov_xx))
    Wt, jitter = cholesky_solve(A, m.cov_xy)
    W = Wt.T
    b = m.mean_y - W @ m.mean_x
    return W, b, {"ridge": lam, "jitter": jitter}


def solve_procrustes(m: Moments) -> tuple[np.ndarray, np.ndarray, dict]:
    """Orthogonal map plus bias: ``W`` = the (d_out, d_in) block of ``U V^T``.

    Unequal widths are zero-padded to ``max(d_in, d_out)``; the orthogonal
    ``R = argmax tr(R^T C)`` over the padded cross covariance, cropped.
    """
    d_in, d_out = m.cov_xy.shape
    d = max(d_in, d_out)
    C = np.zeros((d, d))
    C[:d_out, :d_in] = m.cov_xy.T
    U, _, Vt = np.linalg.svd(C)
    W = (U @ Vt)[:d_out, :d_in]
    b = m.mean_y - W @ m.mean_x
    return W, b, {"padded_to": d}
