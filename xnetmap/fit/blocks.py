"""Out-of-core minibatches: contiguous block reads, shuffled within a window, read ahead.

A full random permutation of the rows makes every minibatch a gather of
scattered rows; on memory-mapped shards (data larger than memory, or simply
not loaded) that gather, not the two GEMMs, bounds an epoch. This module reads
instead **blocks** of consecutive training rows (``BLOCK_ROWS`` of them, a
contiguous range of the file) and feeds the loop from a **window** of several
blocks:

* each epoch the blocks are put in a random order and grouped, in that order,
  into windows of ``k`` minibatches' worth of rows (``k >= 2``, the window's
  bytes about ``WINDOW_BYTES``);
* a window is filled by copying its blocks straight from the memory maps to a
  random permutation of the window's positions, and the loop then trains on it
  (its minibatches are contiguous slices of the buffer: no copy in the loop);
* before a window is filled, the kernel is asked to read the *next* window's
  blocks ahead (``madvise(MADV_WILLNEED)`` through the store's ``advise``), so
  data not yet in the page cache arrive while this window trains. The copy
  itself runs in the loop's thread: on a machine with as many BLAS threads as
  cores, a copying thread beside the GEMMs slows them by more than the copy costs;
* memory is one window (source, target and target norms), whatever ``n``.

What this does to a minibatch's statistics: every training row is still used
exactly once per epoch and every row is equally likely to land in any
minibatch, so the minibatch gradient stays an unbiased estimate of the full
gradient. What changes is the *joint* law: rows that sit within one block of
each other in the store share a minibatch far more often than under a full
permutation (a minibatch draws from about ``window / BLOCK_ROWS`` stretches of
the store instead of from everywhere). When neighbouring rows are correlated
(stores in class order) the minibatch gradient's variance grows, by at most the
within-block correlation; the loop's plateau-driven step decay absorbs it. On
planted data the held-out loss of the fitted map is within 1 % of the full
permutation's (``tests/test_fit_blocks.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .rows import contiguous_views, gather_sorted

#: Training rows per contiguous block read (its copy stays in L2 on the way to the window).
BLOCK_ROWS = 256
#: Bytes of the window (source + target rows).
WINDOW_BYTES = 192 << 20


def window_rows(batch: int, d_in: int, d_out: int, n_rows: int) -> int:
    """Rows of a window: ``k * batch`` with ``k >= 2`` and about ``WINDOW_BYTES`` bytes."""
    k = max(2, WINDOW_BYTES // max(1, batch * (d_in + d_out + 1) * 4))
    return int(min(k * batch, max(batch, n_rows)))


class BlockBatches:
    """Minibatches of ``rows`` read block by block (see the module docstring).

    Parameters
    ----------
    X : array-like of shape (n, d_in)
        ndarray, memmap or row source with ``views``.
    Y : array-like of shape (n, d_out)
    rows : ndarray of int64
        Sorted training rows.
    t_norm : ndarray of shape (n,) float32
        Target norms by row (only ``rows`` are read).
    batch : int
    """

    def __init__(self, X: Any, Y: Any, rows: np.ndarray, t_norm: np.ndarray, batch: int):
        self.X, self.Y, self.rows, self.batch = X, Y, rows, batch
        self.t_norm = t_norm
        self.window = window_rows(batch, X.shape[1], Y.shape[1], len(rows))
        self.bounds = np.arange(0, len(rows) + BLOCK_ROWS, BLOCK_ROWS).clip(max=len(rows))
        self.bounds = np.unique(self.bounds)
        f32 = np.float32
        self.buf = (np.empty((self.window, X.shape[1]), f32),
                    np.empty((self.window, Y.shape[1]), f32), np.empty(self.window, f32))
        self.tmpA = np.empty((BLOCK_ROWS, X.shape[1]), f32)
        self.tmpT = np.empty((BLOCK_ROWS, Y.shape[1]), f32)

    def epoch(self, rng: np.random.Generator) -> Iterator[tuple[Any, Any, Any]]:
        """Yield ``(A, T, target_norms)`` minibatches covering every row once."""
        order = rng.permutation(len(self.bounds) - 1)
        groups, cur, size = [], [], 0
        for b in order:
            n_b = int(self.bounds[b + 1] - self.bounds[b])
            if size + n_b > self.window and cur:
                groups.append(cur)
                cur, size = [], 0
            cur.append(int(b))
            size += n_b
        if cur:
            groups.append(cur)
        seeds = rng.integers(0, 2**63 - 1, size=len(groups))
        A, T, tn = self.buf
        for i, group in enumerate(groups):
            if i + 1 < len(groups):
                self._advise(groups[i + 1])
            n_win = self._fill(group, seeds[i])
            for s in range(0, n_win, self.batch):
                e = min(n_win, s + self.batch)
                yield A[s:e], T[s:e], tn[s:e]

    def _advise(self, blocks: list[int]) -> None:
        """Ask the kernel to read ``blocks`` ahead (sources without ``advise``: nothing)."""
        for M in (self.X, self.Y):
            advise = getattr(M, "advise", None)
            if advise is None:
                continue
            for b in blocks:
                idx = self.rows[self.bounds[b] : self.bounds[b + 1]]
                advise(int(idx[0]), int(idx[-1]) + 1)

    def _fill(self, blocks: list[int], seed: int) -> int:
        """Copy ``blocks`` into the window at shuffled positions; returns the row count."""
        A, T, tn = self.buf
        sizes = [int(self.bounds[b + 1] - self.bounds[b]) for b in blocks]
        dest = np.random.default_rng(seed).permutation(sum(sizes))
        pos = 0
        for b, n_b in zip(blocks, sizes, strict=True):
            idx = self.rows[self.bounds[b] : self.bounds[b + 1]]
            dst = dest[pos : pos + n_b]
            _copy_rows(self.X, idx, A, dst, self.tmpA)
            _copy_rows(self.Y, idx, T, dst, self.tmpT)
            tn[dst] = self.t_norm[idx]
            pos += n_b
        return pos


def _copy_rows(M: Any, idx: np.ndarray, out: np.ndarray, dst: np.ndarray,
               tmp: np.ndarray) -> None:
    """``out[dst] = M[idx]`` for sorted, close-together ``idx``: one copy when they are
    contiguous (straight from the memory map), else a gather through ``tmp``."""
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    if hi - lo != len(idx):
        out[dst] = gather_sorted(M, idx, tmp[: len(idx)])
        return
    pos = 0
    for v in contiguous_views(M, lo, hi):
        out[dst[pos : pos + len(v)]] = v
        pos += len(v)
