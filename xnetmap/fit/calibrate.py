"""Length calibration of a fitted map.

The paper's loss only sees directions: scaling every prediction by any s > 0
leaves it unchanged, so a ``gd`` map's output length is arbitrary. The target
classifier does care, because its bias is added to ``C_w y``: halving ``y``
doubles the bias's relative weight and can change the arg-max. Modes:

``scalar`` (default)
    One global least-squares scale ``s = sum(x.y) / sum(y.y)`` over training
    rows, folded into ``W`` and ``b``. The map stays affine, so it still stitches
    into an ONNX graph as a single Gemm; it is a no-op (s = 1) for ``lstsq``.
``norm``
    Predict each target's length with an affine least-squares model of the
    source features and rescale each prediction to it:
    ``y <- y / ||y|| * max(n(a), 0)``. Closer per row, but no longer affine
    (consumers must apply ``norm_w``/``norm_b`` after the map).
``none``
    The raw solver output (the paper's behaviour for ``gd``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UsageError
from .kernels import EPS
from .rows import iter_pairs
from .solvers import solve_psd

MODES = ("none", "scalar", "norm")


def fit_calibration(mode: str, X: Any, Y: Any, rows: np.ndarray, W: np.ndarray,
                    b: np.ndarray) -> dict:
    """Fit the calibration ``mode`` on ``rows``.

    Returns
    -------
    dict
        ``{"mode": "none"}``, ``{"mode": "scalar", "scale": s}`` or
        ``{"mode": "norm", "norm_w": ndarray (d_in,), "norm_b": float, "rank": int}``
        (``rank``: effective rank of the length model's normal equations, out of d_in + 1).
    """
    if mode not in MODES:
        raise UsageError(f"--calibrate {mode!r} is not one of {', '.join(MODES)}")
    if mode == "none":
        return {"mode": "none"}
    Wt = np.ascontiguousarray(np.asarray(W, np.float32).T)
    b32 = np.asarray(b, np.float32)
    if mode == "scalar":
        num = den = 0.0
        for _, a, y in iter_pairs(X, Y, rows):
            p = a @ Wt
            p += b32
            num += float(np.einsum("ij,ij->", y, p, dtype=np.float64))
            den += float(np.einsum("ij,ij->", p, p, dtype=np.float64))
        scale = num / den if den > 0 else 1.0
        if not np.isfinite(scale) or scale <= 0:
            scale = 1.0
        return {"mode": "scalar", "scale": float(scale)}
    # norm: ridge-free affine least squares of ||x|| on the source features
    d_in = X.shape[1]
    G = np.zeros((d_in + 1, d_in + 1))
    r = np.zeros(d_in + 1)
    shift = None
    for _, a, y in iter_pairs(X, Y, rows):
        a64 = a.astype(np.float64)
        if shift is None:
            shift = a64.mean(axis=0)
        a1 = np.hstack([a64 - shift, np.ones((len(a64), 1))])
        G += a1.T @ a1
        r += a1.T @ np.sqrt(np.einsum("ij,ij->i", y, y, dtype=np.float64))

    coef, info = solve_psd(G, r[:, None])
    w = coef[:d_in, 0]
    return {"mode": "norm", "norm_w": w, "norm_b": float(coef[d_in, 0] - w @ shift),
            "rank": info["rank"]}


def apply_norm(cal: dict, A: np.ndarray, P: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Rescale predictions ``P`` (n, d_out) to the lengths predicted from ``A`` (n, d_in)."""
    target = np.maximum(A @ np.asarray(cal["norm_w"], A.dtype) + cal["norm_b"], 0.0)
    ny = np.maximum(np.sqrt(np.einsum("ij,ij->i", P, P)), eps)
    P *= (target / ny).astype(P.dtype)[:, None]
    return P
