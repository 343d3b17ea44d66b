"""Closed-form solvers: least squares, ridge and orthogonal Procrustes.

All three work from sufficient statistics accumulated in float64 chunk by chunk
(out of core): counts, sums and the cross products of the *shifted* data (the
first chunk's mean is subtracted before multiplying, which keeps the float64
sums well conditioned for features with large means, such as ReLU outputs).

The symmetric positive semidefinite systems are solved with SciPy's LAPACK
routines (:func:`solve_psd`): a Cholesky factorisation (``cho_factor`` /
``cho_solve``) when LAPACK's condition estimate says the matrix is comfortably
non-singular, otherwise an eigendecomposition (``eigh``) that drops the
eigenvalues below an explicit relative cutoff (:data:`RCOND`) and returns the
minimum-norm solution. Both paths give the same answer where they overlap, so
the result does not depend on which one the rounding of a given BLAS picks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from . import blas
from .rows import iter_chunks, iter_pairs


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


@dataclass
class Gram:
    """The source side of :class:`Moments`: what every map from one source shares.

    Float64 sums over ``n`` rows of ``a - shift`` (``shift``: the first chunk's mean):
    ``total`` (d_in,) and ``sxx`` (d_in, d_in). See :func:`accumulate_gram`.
    """

    n: int
    shift: np.ndarray
    total: np.ndarray
    sxx: np.ndarray


def accumulate_gram(X: Any, rows: np.ndarray) -> Gram:
    """Stream ``rows`` of ``X`` into the shifted float64 sums of :class:`Gram`."""
    d_in = X.shape[1]
    sxx, total, shift, n = np.zeros((d_in, d_in)), np.zeros(d_in), None, 0
    for _, a in iter_chunks(X, rows):
        a64 = a.astype(np.float64)
        if shift is None:
            shift = a64.mean(axis=0)
        a64 -= shift
        sxx += a64.T @ a64
        total += a64.sum(axis=0)
        n += len(a64)
    if n == 0:
        raise InputError("no usable rows to fit on (all rows masked, zero or held out)")
    return Gram(n, shift, total, sxx)


def accumulate_moments(X: Any, Y: Any, rows: np.ndarray, *, cross: bool = True,
                       gram: Gram | None = None) -> Moments:
    """Stream ``rows`` of ``X`` (source) and ``Y`` (target) into float64 moments.

    ``gram``: the source's :func:`accumulate_gram` over the same ``rows``, computed
    once for every target of one source (the study's K(K-1) maps then cost K Gram
    passes and K(K-1) cross products); the pass here then skips ``X^T X``.
    """
    d_in, d_out = X.shape[1], Y.shape[1]
    if gram is not None and gram.n != len(rows):
        raise ValueError(f"the Gram sums cover {gram.n} rows, not these {len(rows)}")
    sxx = np.zeros((d_in, d_in)) if gram is None else gram.sxx
    sxy = np.zeros((d_in, d_out)) if cross else None
    sx, sy = (np.zeros(d_in) if gram is None else gram.total), np.zeros(d_out)
    shift_x = None if gram is None else gram.shift
    shift_y = None
    n = 0
    # the chunks are bounded by bytes (rows.chunk_rows): their float64 copies stay ~64 MB
    for _, a, y in iter_pairs(X, Y, rows):
        y64 = y.astype(np.float64)
        if shift_y is None:
            shift_y = y64.mean(axis=0)
        y64 -= shift_y
        sy += y64.sum(axis=0)
        n += len(y64)
        if gram is not None and not cross:
            continue
        a64 = a.astype(np.float64)
        if shift_x is None:
            shift_x = a64.mean(axis=0)
        a64 -= shift_x
        if gram is None:
            sxx += a64.T @ a64
            sx += a64.sum(axis=0)
        if cross:
            sxy += a64.T @ y64
    if n == 0:
        raise InputError("no usable rows to fit on (all rows masked, zero or held out)")
    mx, my = sx / n, sy / n
    cov_xx = sxx / n - np.outer(mx, mx)
    cov_xy = sxy / n - np.outer(mx, my) if cross else None
    return Moments(n, shift_x + mx, shift_y + my, cov_xx, cov_xy)


#: Eigenvalues below ``RCOND * largest`` are treated as zero. Features are float32
#: (relative rounding 6e-8, so 4e-15 in a variance); 1e-12 leaves headroom for
#: large feature means and still keeps a covariance of condition 1e10 at full rank.
RCOND = 1e-12
#: LAPACK's reciprocal condition estimate above which Cholesky is used. Far above
#: RCOND (even allowing the 1-norm estimate's factor-of-d slack), so no direction
#: that the cutoff would drop is ever solved by Cholesky.
CHOLESKY_MIN_RCOND = 1e-8


def solve_psd(A: np.ndarray, B: np.ndarray, *, rcond: float = RCOND) -> tuple[np.ndarray, dict]:
    """Minimum-norm solution of ``A Z = B`` for a symmetric positive semidefinite ``A``.

    Parameters
    ----------
    A : ndarray of shape (d, d)
        Symmetric positive semidefinite (a covariance plus any ridge).
    B : ndarray of shape (d, k)
    rcond : float
        Relative eigenvalue cutoff: directions whose eigenvalue is at most
        ``rcond * max eigenvalue`` are left out of the solution.

    Returns
    -------
    Z : ndarray of shape (d, k), float64
    info : dict
        ``rank`` (effective rank), ``dim`` (d), ``rcond``, ``eigenvalue_cutoff``
        (absolute; eigenvalues at or below it were dropped), ``condition`` (of the
        part solved: LAPACK's 1-norm estimate after Cholesky, ``max/min`` kept
        eigenvalue otherwise) and ``method`` (``"cholesky"`` or ``"eigh"``).

    Raises
    ------
    InputError
        ``A`` or ``B`` hold NaN or infinity.
    """
    import scipy.linalg  # noqa: F401, PLC0415 - loads SciPy's OpenBLAS before the controller

    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if not (np.isfinite(A).all() and np.isfinite(B).all()):
        raise InputError("the normal equations hold NaN or infinity; the features overflow "
                         "float64 sums (check the feature store for huge values)")
    d = A.shape[0]
    with _lapack_threads(d):
        return _factor_and_solve(A, B, rcond, {"dim": int(d), "rcond": float(rcond)})


#: Systems up to this width are factorised on one thread (see :func:`_lapack_threads`).
SMALL_SOLVE = 1024


def _lapack_threads(d: int) -> Any:
    """A context running the BLAS libraries on one thread for systems up to SMALL_SOLVE wide.

    NumPy and SciPy each load their own OpenBLAS; right after a NumPy GEMM, NumPy's
    threads still spin on the cores and a threaded SciPy factorisation waits for them
    (a 256-wide Cholesky: 3.7 ms instead of 0.3 ms, measured here). Small systems gain
    nothing from threads anyway; wide ones keep them.
    """
    return contextlib.nullcontext() if d > SMALL_SOLVE else blas.one_thread()


def _factor_and_solve(A: np.ndarray, B: np.ndarray, rcond: float,
                      info: dict) -> tuple[np.ndarray, dict]:
    """The two paths of :func:`solve_psd`: Cholesky when comfortably definite, else eigh."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve, eigh  # noqa: PLC0415
    from scipy.linalg.lapack import dpocon  # noqa: PLC0415

    d = A.shape[0]
    anorm = float(np.abs(A).sum(axis=0).max())
    if anorm > 0:
        try:
            c = cho_factor(A, lower=True, check_finite=False)
            est, err = dpocon(c[0], anorm, uplo="L")
            if err == 0 and est > CHOLESKY_MIN_RCOND:
                info.update(rank=int(d), eigenvalue_cutoff=0.0, condition=float(1.0 / est),
                            method="cholesky")
                return cho_solve(c, B, check_finite=False), info
        except LinAlgError:
            pass  # not numerically positive definite: the rank-revealing path below
    w, V = eigh(0.5 * (A + A.T), check_finite=False)
    cutoff = float(rcond * max(w[-1], 0.0))
    keep = w > cutoff
    Vk = V[:, keep]
    Z = Vk @ ((Vk.T @ B) / w[keep, None])
    rank = int(keep.sum())
    info.update(rank=rank, eigenvalue_cutoff=cutoff, method="eigh",
                condition=float(w[-1] / w[keep][0]) if rank else None)
    return Z, info


def cholesky_solve(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, float]:
    """Solve ``A Z = B`` for symmetric positive (semi)definite ``A`` (see :func:`solve_psd`).

    Returns
    -------
    Z : ndarray, same shape as ``B``
    cutoff : float
        The absolute eigenvalue cutoff applied (0.0 when ``A`` was solved as is);
        use :func:`solve_psd` for the rank and condition.
    """
    Z, info = solve_psd(A, B)
    return Z, info["eigenvalue_cutoff"] if info["rank"] < info["dim"] else 0.0


def solve_ridge(m: Moments, alpha: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Affine least squares with a ridge ``alpha * mean(diag(cov_xx))`` on W only.

    A singular covariance (collinear or constant features) gets the minimum-norm
    solution: the directions below the cutoff of :func:`solve_psd` are left out.

    Returns
    -------
    W : ndarray of shape (d_out, d_in), float64
    b : ndarray of shape (d_out,), float64
    info : dict
        The regularisation actually applied: ``ridge`` (absolute value added to
        the covariance's diagonal), ``rank`` (effective rank of the solved
        system, out of ``d_in``), ``eigenvalue_cutoff``, ``rcond``, ``condition``
        and ``solve_method`` (see :func:`solve_psd`).
    """
    lam = alpha * float(np.mean(np.diag(m.cov_xx)))
    A = m.cov_xx + lam * np.eye(len(m.cov_xx))
    Wt, s = solve_psd(A, m.cov_xy)
    W = Wt.T
    b = m.mean_y - W @ m.mean_x
    return W, b, {"ridge": lam, "rank": s["rank"], "eigenvalue_cutoff": s["eigenvalue_cutoff"],
                  "rcond": s["rcond"], "condition": s["condition"], "solve_method": s["method"]}


def solve_procrustes(m: Moments) -> tuple[np.ndarray, np.ndarray, dict]:
    """Orthogonal map plus bias: ``W`` = the (d_out, d_in) block of ``U V^T``.

    Unequal widths are zero-padded to ``max(d_in, d_out)``; the orthogonal
    ``R = argmax tr(R^T C)`` over the padded cross covariance, cropped. When the
    cross covariance is rank deficient ``R`` is not unique; ``info["rank"]`` (its
    singular values above ``RCOND`` times the largest) says so.
    """
    d_in, d_out = m.cov_xy.shape
    d = max(d_in, d_out)
    C = np.zeros((d, d))
    C[:d_out, :d_in] = m.cov_xy.T
    U, sv, Vt = np.linalg.svd(C)
    W = (U @ Vt)[:d_out, :d_in]
    b = m.mean_y - W @ m.mean_x
    rank = int(np.sum(sv > RCOND * sv[0])) if sv[0] > 0 else 0
    return W, b, {"padded_to": d, "rank": rank, "rcond": RCOND}
