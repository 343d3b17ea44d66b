"""Linear CKA between two feature spaces, streamed over rows, without an n x n Gram matrix.

Linear centred kernel alignment (Kornblith et al. 2019) of X (n, d1) and Y (n, d2)::

    CKA(X, Y) = ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)

with Xc, Yc the column-centred matrices. It equals the Gram-matrix form
``HSIC(XX^T, YY^T) / sqrt(HSIC(XX^T, XX^T) HSIC(YY^T, YY^T))`` but needs only
d x d matrices, so it scales to ImageNet (n = 1.28 M) at O(n d^2) time and
O(d^2) memory. Rows are accumulated in float64 chunks; centring is done
algebraically at the end (``Xc^T Yc = X^T Y - n mx my^T``), after shifting every
row by the first chunk's mean so that the subtraction does not cancel badly.

The biased estimator above is pulled towards 1 when n is not much larger than
the widths (6 images of 1280-d features give 0.98 for unrelated models). The
debiased linear CKA (:meth:`CKAAccumulator.debiased`; Nguyen, Raghu & Kornblith
2021) replaces each HSIC by the unbiased estimator of Song et al. (2012)::

    HSIC_u(K, L) = [tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))

with K~ = K minus its diagonal. For linear kernels every term is a feature-space
sum: tr(K~L~) = ||X'Y||_F^2 - sum_i |x_i|^2 |y_i|^2, 1'K~1 = |sum_i x_i|^2 -
sum_i |x_i|^2, and 1'K~L~1 needs only the d-vectors sum_i |y_i|^2 x_i and
sum_i |x_i|^2 y_i; the accumulator keeps those (O(d) more memory) beside the d x d
products. HSIC_u is a U-statistic of a shift-invariant kernel, so it is computed
on the shifted rows directly. It is unbiased, not bounded: for unrelated
features it scatters around 0 (negative values happen), and it needs n >= 4.
:func:`too_few_samples` says when n < 5 max(d1, d2), where the biased value
should not be reported alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xnetmap.errors import InputError

#: Samples per feature below which a CKA value is flagged (n < 5 max(d1, d2)).
SAMPLES_PER_DIM = 5


def too_few_samples(n: int, d1: int, d2: int) -> bool:
    """True when ``n < SAMPLES_PER_DIM * max(d1, d2)``: the biased CKA is inflated there."""
    return int(n) < SAMPLES_PER_DIM * max(int(d1), int(d2))


@dataclass(frozen=True)
class CKASummary:
    """Both linear CKA estimates of one pair of feature sets, and the sample check.

    Attributes
    ----------
    cka : float
        Biased linear CKA in [0, 1] (Kornblith et al. 2019); NaN without variance.
    cka_debiased : float
        Debiased linear CKA (unbiased HSIC); NaN when n < 4 or a side's unbiased
        self-HSIC is not positive.
    n, d1, d2 : int
        Samples and widths.
    too_few_samples : bool
        ``n < 5 max(d1, d2)``: report the debiased value, or warn.
    """

    cka: float
    cka_debiased: float
    n: int
    d1: int
    d2: int
    too_few_samples: bool


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
            # per-row squared norms p_i = |x_i|^2, q_i = |y_i|^2 (of the shifted rows)
            self._pp = self._qq = self._pq = 0.0
            self._px, self._qx = np.zeros(d1), np.zeros(d1)  # sum p_i x_i, sum q_i x_i
            self._py, self._qy = np.zeros(d2), np.zeros(d2)  # sum p_i y_i, sum q_i y_i
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
        p = np.einsum("ij,ij->i", Xs, Xs)
        q = np.einsum("ij,ij->i", Ys, Ys)
        self._pp += float(p @ p)
        self._qq += float(q @ q)
        self._pq += float(p @ q)
        self._px += p @ Xs
        self._qx += q @ Xs
        self._py += p @ Ys
        self._qy += q @ Ys
        return self

    @property
    def too_few_samples(self) -> bool:
        """True when the rows seen are fewer than 5 times the wider side's width."""
        if self._shift_x is None:
            return True
        return too_few_samples(self.n, self._sx.shape[0], self._sy.shape[0])

    def debiased(self) -> float:
        """Debiased linear CKA (unbiased HSIC) of all rows seen; see the module docstring.

        Returns NaN when fewer than 4 rows were seen or either side's unbiased
        self-HSIC is not clearly positive (below 1e-9 of the biased one: no
        variance beyond rounding at this n).
        """
        n = self.n
        if n < 4:
            return float("nan")
        tx, ty = float(np.trace(self._xx)), float(np.trace(self._yy))
        hxy = _hsic_u(n, self._xy, self._sx, self._sy, tx, ty, self._pq, self._qx, self._py)
        hxx = _hsic_u(n, self._xx, self._sx, self._sx, tx, tx, self._pp, self._px, self._px)
        hyy = _hsic_u(n, self._yy, self._sy, self._sy, ty, ty, self._qq, self._qy, self._qy)
        mx, my = self._sx / n, self._sy / n
        bxx = float(np.sum((self._xx - n * np.outer(mx, mx)) ** 2))
        byy = float(np.sum((self._yy - n * np.outer(my, my)) ** 2))
        if not (hxx > 1e-9 * bxx and hyy > 1e-9 * byy):
            return float("nan")
        return float(hxy / np.sqrt(hxx * hyy))

    def summary(self) -> CKASummary:
        """Both estimates and the sample-count check (see :class:`CKASummary`)."""
        cka = self.result()
        return CKASummary(cka=cka, cka_debiased=self.debiased(), n=self.n,
                          d1=int(self._sx.shape[0]), d2=int(self._sy.shape[0]),
                          too_few_samples=self.too_few_samples)

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


def _hsic_u(n: int, G: np.ndarray, sa: np.ndarray, sb: np.ndarray, ta: float, tb: float,
            s_ab: float, va: np.ndarray, vb: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012) of linear kernels, from feature-space sums.

    ``G = A'B`` (da, db); ``sa``, ``sb`` the column sums; ``ta = sum_i p_i``,
    ``tb = sum_i q_i`` (row squared norms p of A, q of B); ``s_ab = sum_i p_i q_i``;
    ``va = sum_i q_i a_i``; ``vb = sum_i p_i b_i``. The common factor 1 / (n(n-3))
    is dropped: it cancels in CKA.
    """
    tr_kl = float(np.sum(G * G)) - s_ab
    one_k = float(sa @ sa) - ta
    one_l = float(sb @ sb) - tb
    one_kl = float(sa @ G @ sb) - float(sa @ va) - float(sb @ vb) + s_ab
    return tr_kl + one_k * one_l / ((n - 1) * (n - 2)) - 2.0 * one_kl / (n - 2)


def linear_cka(X, Y, *, chunk_size: int = 16384, valid=None, debiased: bool = False) -> float:
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
    debiased : bool
        Return the debiased estimate (unbiased HSIC) instead of the biased one.

    Returns
    -------
    float
        Biased: CKA in [0, 1]; 1 means the spaces agree up to rotation and
        isotropic scaling. Debiased: near 1 for such spaces, near 0 (possibly
        negative) for unrelated ones.
    """
    acc = _accumulate(X, Y, chunk_size, valid)
    return acc.debiased() if debiased else acc.result()


def linear_cka_summary(X, Y, *, chunk_size: int = 16384, valid=None) -> CKASummary:
    """Biased and debiased linear CKA in one pass, with the n < 5 max(d1, d2) flag.

    Parameters as :func:`linear_cka`.
    """
    return _accumulate(X, Y, chunk_size, valid).summary()


def _accumulate(X, Y, chunk_size: int, valid) -> CKAAccumulator:
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
    return acc


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
