"""Quality of a map on a set of rows: the paper's loss, mean cosine, R^2."""

from __future__ import annotations

from typing import Any

import numpy as np

from .kernels import EPS
from .rows import iter_pairs


def accumulate_metrics(X: Any, Y: Any, rows: np.ndarray, W: np.ndarray, b: np.ndarray,
                       *, batch: int | None = None, eps: float = EPS,
                       norm_model: Any = None) -> dict:
    """Metrics of ``y = W a + b`` against the true targets over ``rows``.

    Parameters
    ----------
    X : array-like of shape (n, d_in)
    Y : array-like of shape (n, d_out)
    rows : ndarray of int64, sorted
    W : ndarray of shape (d_out, d_in)
    b : ndarray of shape (d_out,)
    norm_model : callable, optional
        ``f(A, P) -> P`` applied to predictions (per-row norm calibration).

    Returns
    -------
    dict
        ``loss`` (mean E), ``cosine`` (mean cosine similarity), ``r2`` (pooled over
        all target dimensions, around the per-dimension mean), ``mse`` (mean squared
        error per row), ``n``.
    """
    Wt = np.ascontiguousarray(np.asarray(W, np.float32).T)
    b32 = np.asarray(b, np.float32)
    n = 0
    s_cos = s_res = s_yy = 0.0
    s_y = np.zeros(Y.shape[1])
    for _, a, y in iter_pairs(X, Y, rows, batch):
        p = a @ Wt
        p += b32
        if norm_model is not None:
            p = norm_model(a, p)
        nx = np.maximum(np.sqrt(np.einsum("ij,ij->i", y, y, dtype=np.float64)), eps)
        ny = np.maximum(np.sqrt(np.einsum("ij,ij->i", p, p, dtype=np.float64)), eps)
        s_cos += float(np.sum(np.einsum("ij,ij->i", y, p, dtype=np.float64) / (nx * ny)))
        r = p - y
        s_res += float(np.einsum("ij,ij->", r, r, dtype=np.float64))
        s_yy += float(np.einsum("ij,ij->", y, y, dtype=np.float64))
        s_y += y.sum(axis=0, dtype=np.float64)
        n += len(a)
    if n == 0:
        return {"loss": float("nan"), "cosine": float("nan"), "r2": float("nan"),
                "mse": float("nan"), "n": 0}
    cos = s_cos / n
    ss_tot = s_yy - float(s_y @ s_y) / n
    return {"loss": 2.0 - 2.0 * cos, "cosine": cos,
            "r2": 1.0 - s_res / ss_tot if ss_tot > 0 else float("nan"),
            "mse": s_res / n, "n": n}
