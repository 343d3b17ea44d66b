"""Out-of-core minibatches: blocks of consecutive rows, in a new random order each epoch.

A full random permutation of the rows makes every minibatch a gather of
scattered rows; on memory-mapped shards (data larger than memory, or simply
not loaded) that gather, not the two GEMMs, bounds an epoch. This module reads
instead **blocks** of ``BLOCK_ROWS`` consecutive training rows (one short
contiguous range of a shard, held-out rows skipped):

* each epoch the blocks are put in a new random order; a **window** (a few
  minibatches' worth, about ``WINDOW_BYTES``) is filled by copying the next
  blocks in that order straight from the memory maps to consecutive positions
  (one gather per block into its place: no second copy), and the loop trains on
  consecutive slices of the window (no copy in the loop);
* for data larger than half the machine's memory (smaller stores are in the page
  cache already: opening them hashed every shard), before a window is filled the
  kernel is asked to read the *next* window's blocks ahead
  (``madvise(MADV_WILLNEED)`` on the store's ``advise_ranges``), so data not yet
  in the page cache arrive while this window trains. The copy
  itself runs in the loop's thread, between the GEMMs: on a machine with as many
  BLAS threads as cores, a copying thread beside the GEMMs slows them by more
  than the copy costs (measured: 6.0 s of GEMMs became 7.1 s);
* memory is one window (source, target and target norms), whatever ``n``.

What this does to a minibatch's statistics: a minibatch is the union of
``batch / BLOCK_ROWS`` blocks drawn without replacement from *all* blocks of the
store (a random block order each epoch), so every training row is still used
exactly once per epoch and is equally likely to land in any minibatch: the
minibatch gradient stays an unbiased estimate of the full gradient. What
changes is the *joint* law: rows within one block (``BLOCK_ROWS`` neighbours in
the store) always share a minibatch. When neighbouring rows are correlated
(stores in class order) the minibatch gradient's variance grows, by at most the
within-block correlation; the loop's plateau-driven step decay absorbs it. On
planted class-ordered data the held-out loss of the fitted map is within 1 % of
the full permutation's (``tests/test_fit_blocks.py``).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .rows import read_plan, take_plan

#: Training rows per block: one contiguous copy of 32-192 KB at the widths of ImageNet
#: networks (512-3,072 floats a row), and 128 blocks in a minibatch of 8,192 rows.
BLOCK_ROWS = 64
#: Bytes of the window (source + target rows).
WINDOW_BYTES = 192 << 20
#: Data larger than this share of physical memory are read ahead (``madvise``).
READ_AHEAD_SHARE = 0.5


def _physical_memory() -> int:
    """Bytes of physical memory (where the OS does not say: no limit, so no read-ahead)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 1 << 62


def window_rows(batch: int, d_in: int, d_out: int, n_rows: int) -> int:
    """Rows of a window: ``k * batch`` with ``k >= 2`` and about ``WINDOW_BYTES`` bytes."""
    k = max(2, WINDOW_BYTES // max(1, batch * (d_in + d_out + 1) * 4))
    return int(min(k * batch, max(batch, n_rows)))


class BlockBatches:
    """Minibatches of ``rows`` read block by block (see the module docstring).

    Parameters
    ----------
    X : array-like of shape (n, d_in)
        ndarray, memmap or row source with ``views`` (and ``advise_ranges``).
    Y : array-like of shape (n, d_out)
    rows : ndarray of int64
        Sorted training rows.
    t_norm : ndarray of shape (n,) float32
        Target norms by row (only ``rows`` are read).
    batch : int
    """

    def __init__(self, X: Any, Y: Any, rows: np.ndarray, t_norm: np.ndarray, batch: int):
        self.X, self.Y, self.rows, self.batch = X, Y, rows, batch
        self.window = window_rows(batch, X.shape[1], Y.shape[1], len(rows))
        self.bounds = np.arange(0, len(rows) + BLOCK_ROWS, BLOCK_ROWS).clip(max=len(rows))
        self.bounds = np.unique(self.bounds)
        # where each block's rows sit (views of the shards, rows within them): the blocks
        # never change, so a fill is one take per block and side, no per-epoch planning
        spans = list(zip(self.bounds[:-1], self.bounds[1:]))
        self.plans = [(read_plan(X, rows[lo:hi]), read_plan(Y, rows[lo:hi])) for lo, hi in spans]
        # and their madvise ranges, for reading ahead, only for data that may not stay in
        # the page cache: opening a store hashed every shard, so smaller data are resident
        # and a madvise per block would cost ~0.15 s an epoch for nothing (800k x 1,280)
        self.ahead = None
        if len(rows) * (X.shape[1] + Y.shape[1]) * 4 > READ_AHEAD_SHARE * _physical_memory():
            self.ahead = [[r for M in (X, Y) if hasattr(M, "advise_ranges")
                           for r in M.advise_ranges(int(rows[lo]), int(rows[hi - 1]) + 1)]
                          for lo, hi in spans]
        self.t_norm = np.ascontiguousarray(t_norm[rows])  # in training-row order
        f32 = np.float32
        self.buf = (np.empty((self.window, X.shape[1]), f32),
                    np.empty((self.window, Y.shape[1]), f32), np.empty(self.window, f32))

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
        A, T, tn = self.buf
        for i, group in enumerate(groups):
            if self.ahead is not None and i + 1 < len(groups):
                self._advise(groups[i + 1])
            n_win = self._fill(group)
            for s in range(0, n_win, self.batch):
                e = min(n_win, s + self.batch)
                yield A[s:e], T[s:e], tn[s:e]

    def _advise(self, blocks: list[int]) -> None:
        """Ask the kernel to read ``blocks`` ahead (ranges computed once, at the start)."""
        for b in blocks:
            for mm, off, length in self.ahead[b]:
                mm.madvise(mmap.MADV_WILLNEED, off, length)

    def _fill(self, blocks: list[int]) -> int:
        """Copy ``blocks`` into the window, one after the other; returns the row count."""
        A, T, tn = self.buf
        pos = 0
        for b in blocks:
            lo, hi = int(self.bounds[b]), int(self.bounds[b + 1])
            plan_x, plan_y = self.plans[b]
            take_plan(plan_x, A, pos)
            take_plan(plan_y, T, pos)
            tn[pos : pos + hi - lo] = self.t_norm[lo:hi]
            pos += hi - lo
        return pos

