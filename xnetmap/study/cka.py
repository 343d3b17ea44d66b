"""Linear CKA between two feature spaces, streamed over rows, without an n x n Gram matrix.

Linear centred kernel alignment (Kornblith et al. 2019) of X (n, d1) and Y (n, d2)::

    CKA(X, Y) = ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)

with Xc, Yc the column-centred matrices. It equals the Gram-matrix form
``HSIC(XX^T, YY^T) / sqrt(HSIC(XX^T, XX^T) HSIC(YY^T, YY^T))`` but needs only
d x d matrices, so it scales to ImageNet (n = 1.28 M) at O(n d^2) time and
O(d^2) memory. Rows are accumulated in float64 chunks; centring is done
algebraically at the end (``Xc^T Yc = X^T Y - n mx my^T``), after shifting every
row by the first chunk's mean so that the subtraction does not cancel badly.
"""

from __future__ import annotations

import numpy as np

from xnetmap.errors import InputError


class CKAAccumulator:
    """Running sums for linear CKA; feed row chunks with :meth:`update`, read :meth:`result`.

    Memory is ``d1^2 + d2^2 + d1 d2`` float64 values (about 100 MB for 2048-d features).
    """

    def __init__(self) -> None:
        self.n = 0
        self._shift_x: np.ndarray | None = None
        self._shift_y: np.ndarray | None = None

    def update(self, X, Y) -> CKAAccumulator:
        """Add a chunk of paired rows.

        Parameters
        ----------
        X : ndarray of shape (m, d1)
        Y : ndarray of shape (m, d2)
            Row i of X and row i of Y describe the same sample.
        """
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise InputError(
                f"CKA needs paired 2-D feature chunks with the same number of rows; "
                f"got shapes {X.shape} and {Y.shape}"
            )
        if X.shape[0] == 0:
            return self
        if self._shift_x is None:
            self._shift_x = X.mean(axis=0)
            self._shift_y = Y.mean(axis=0)
            d1, d2 = X.shape[1], Y.shape[1]
            self._sx = np.zeros(d1)
            self._sy = np.zeros(d2)
            self._xx = np.zeros((d1, d1))
            self._yy = np.zeros((d2, d2))
            self._xy = np.zeros((d1, d2))
        elif X.shape[1] != self._sx.shape[0] or Y.shape[1] != self._sy.shape[0]:
            raise InputError(
                f"CKA chunk widths changed: expected ({self._sx.shape[0]}, {self._sy.shape[0]}) "
                f"columns, got ({X.shape[1]}, {Y.shape[1]})"
            )
        Xs = X - self._shift_x
        Ys = Y - self._shift_y
        self.n += X.shape[0]
        self._sx += Xs.sum(axis=0)
        self._sy += Ys.sum(axis=0)
        self._xx += Xs.T @ Xs
        self._yy += Ys.T @ Ys
        self._xy += Xs.T @ Ys
        return self

    def result(self) -> float:
        """Linear CKA in [0, 1] of all rows seen; NaN when either side has zero variance."""
        if self.n < 2:
            raise InputError(f"CKA needs at least 2 samples; got {self.n}")
        n = self.n
        mx = self._sx / n
        my = self._sy / n
        cxy = self._xy - n * np.outer(mx, my)
        cxx = self._xx - n * np.outer(mx, mx)
        cyy = self._yy - n * np.outer(my, my)
        num = float(np.sum(cxy * cxy))
        den = float(np.linalg.norm(cxx) * np.linalg.norm(cyy))
        if den <= 0.0:
            return float("nan")
        return float(min(1.0, max(0.0, num / den)))


def linear_cka(X, Y, *, chunk_size: int = 16384, valid=None) -> float:
    """Linear CKA between two feature matrices of the same samples.

    Parameters
    ----------
    X : ndarray of shape (n_samples, d1)
        Features of model A (array or memmap; read in row chunks).
    Y : ndarray of shape (n_samples, d2)
        Features of model B for the same samples, in the same order.
    chunk_size : int
        Rows per chunk.
    valid : ndarray of shape (n_samples,), bool, optional
        Rows to use (e.g. the complement of a feature store's unreadable-sample mask).

    Returns
    -------
    float
        CKA in [0, 1]; 1 means the spaces agree up to rotation and isotropic scaling.
    """
    if X.shape[0] != Y.shape[0]:
        raise InputError(
            f"CKA needs the same samples on both sides; got {X.shape[0]} and {Y.shape[0]} rows"
        )
    acc = CKAAccumulator()
    keep = None if valid is None else np.asarray(valid, dtype=bool)
    if keep is not None and keep.shape != (X.shape[0],):
        raise InputError(f"valid must have shape ({X.shape[0]},); got {keep.shape}")
    for s in range(0, X.shape[0], chunk_size):
        Xc = np.asarray(X[s : s + chunk_size])
        Yc = np.asarray(Y[s : s + chunk_size])
        if keep is not None:
            k = keep[s : s + chunk_size]
            Xc, Yc = Xc[k], Yc[k]
        acc.update(Xc, Yc)
    return acc.result()


def linear_cka_gram(X, Y) -> float:
    """Reference linear CKA through n x n Gram matrices (small n only; for tests).

    Parameters
    ----------
    X : ndarray of shape (n_samples, d1)
    Y : ndarray of shape (n_samples, d2)
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n = X.shape[0]
    H = np.eye(n) - 1.0 / n
    K = H @ (X @ X.T) @ H
    L = H @ (Y @ Y.T) @ H
    return float(np.sum(K * L) / (np.linalg.norm(K) * np.linalg.norm(L)))
