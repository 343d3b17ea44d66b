"""The device operations of the gradient-descent loop: one class per kind of memory.

:func:`xnetmap.fit.gd.fit_gd` is written once against this small interface and
never asks which device it runs on:

* ``epoch_batches(train, rng, size)`` yields the ``(A, T, aux)`` minibatches of
  one training pass (``aux`` is handed back to ``loss_grad``); ``batches(rows,
  size)`` the same for ``rows`` in order (evaluation);
* ``loss_grad(P, b, T, aux, scale, colsum)`` adds the bias ``b`` to the products
  ``P = A W^T``, overwrites them with the scaled gradient, writes the gradient's
  column sum into ``colsum`` and returns the per-row loss and ``||p||^2`` (device
  arrays); on the host all of it is one pass over cache-sized row chunks;
* ``nesterov(g, lr, mu, p, v)`` updates ``p`` and ``v`` in place (``lr`` a
  one-element device array, so the step size never visits the host);
* ``row_cosine(P, T, out)`` fills ``out`` with the float64 cosine per row.

:class:`HostOps` runs the NumPy twins on host memory (arrays, memmaps, feature
stores; data on disk larger than ``LOAD_BYTES`` are read by contiguous blocks,
see :mod:`.blocks`); :class:`DeviceOps` runs the CUDA kernels of :mod:`.kernels` and
:mod:`.optim`, compiled by a device object of :mod:`xnetmap.backend`, with the
data copied to the device when they fit in its memory (otherwise each minibatch
is gathered on the host and copied in).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .blocks import BlockBatches
from .kernels import (
    LossGradWork,
    cuda_loss_grad,
    cuda_row_cosine,
    numpy_loss_grad,
    numpy_row_cosine,
)
from .optim import cuda_nesterov, nesterov_step_numpy
from .rows import is_in_memory, iter_chunks, take_into

#: Share of the device's free memory the data may take to be copied there whole.
RESIDENT_SHARE = 0.6
#: Memory-mapped data (source + target bytes) up to this size are read into memory once
#: and shuffled by a full permutation; larger data are read by contiguous blocks.
LOAD_BYTES = 256 << 20
SHUFFLES = ("auto", "full", "block")
#: Bytes of one (rows, d_out) operand per call of the host loss kernel (best measured here).
CHUNK_BYTES = 1 << 20


class HostOps:
    """NumPy twins on host memory.

    Parameters
    ----------
    X : array-like of shape (n, d_in)
    Y : array-like of shape (n, d_out)
    train : ndarray of int64
        Rows whose target norms are computed once (they never change).
    batch : int
        Largest minibatch.
    eps : float
    shuffle : {"auto", "full", "block"}
        ``full``: each pass is a random permutation of ``train``; ``block``: contiguous
        blocks shuffled within a read-ahead window (:mod:`.blocks`); ``auto``: ``block``
        for data not in memory and larger than ``LOAD_BYTES``, else ``full`` (smaller
        memory-mapped data are read into memory first: same rows, same answer).
    """

    def __init__(self, X: Any, Y: Any, train: np.ndarray, batch: int, eps: float,
                 shuffle: str = "auto"):
        nbytes = X.shape[0] * (X.shape[1] + Y.shape[1]) * 4
        in_mem = is_in_memory(X) and is_in_memory(Y)
        self.block = shuffle == "block" or (shuffle == "auto" and not in_mem
                                            and nbytes > LOAD_BYTES)
        if not self.block and not in_mem and nbytes <= LOAD_BYTES:
            X, Y = _load(X), _load(Y)
        self.X, self.Y, self.eps = X, Y, eps
        if not self.block:
            self.bufA = np.empty((batch, X.shape[1]), np.float32)
            self.bufT = np.empty((batch, Y.shape[1]), np.float32)
        # the per-row maths runs over cache-sized row chunks: one trip to memory, not ten
        self.chunk = int(np.clip(CHUNK_BYTES // (4 * Y.shape[1]), 16, batch))
        self.work = LossGradWork(self.chunk, Y.shape[1])
        self.loss, self.psq = np.empty(batch, np.float32), np.empty(batch, np.float32)
        self.ones = np.ones(self.chunk, np.float32)
        self.tmp: dict[tuple, np.ndarray] = {}
        # target norms never change: one pass now saves one per step
        self.t_norm = np.zeros(Y.shape[0], np.float32)
        for idx, blk in iter_chunks(Y, train):
            self.t_norm[idx] = np.sqrt(np.einsum("ij,ij->i", blk, blk))
        self.blocks = BlockBatches(X, Y, train, self.t_norm, batch) if self.block else None
        if self.blocks is not None:  # evaluation never overlaps a pass: it borrows the window
            self.bufA, self.bufT = self.blocks.buf[0][:batch], self.blocks.buf[1][:batch]

    def epoch_batches(self, train: np.ndarray, rng: np.random.Generator,
                      size: int) -> Iterator[tuple[Any, Any, Any]]:
        if self.blocks is not None:
            return self.blocks.epoch(rng)
        return self.batches(rng.permutation(train), size)

    def batches(self, rows: np.ndarray, size: int) -> Iterator[tuple[Any, Any, Any]]:
        for s in range(0, len(rows), size):
            idx = np.sort(rows[s : s + size])  # sorted: sequential reads of memory/memmaps
            yield take_into(self.X, idx, self.bufA), take_into(self.Y, idx, self.bufT), \
                self.t_norm[idx]

    def loss_grad(self, P: Any, b: Any, T: Any, aux: Any, scale: float,
                  colsum: Any) -> tuple[Any, Any]:
        n, c = P.shape[0], self.chunk
        colsum[...] = 0.0
        for s in range(0, n, c):  # rows are independent: chunking changes no bit of P
            e = min(n, s + c)
            Pc = P[s:e]
            Pc += b  # while the chunk is in cache: one trip to memory, not three
            loss, psq = numpy_loss_grad(Pc, T[s:e], self.work, scale=scale, eps=self.eps,
                                        target_norm=aux[s:e])
            self.loss[s:e], self.psq[s:e] = loss, psq
            colsum += self.ones[: e - s] @ Pc  # a GEMV: faster than sum(axis=0) here
        return self.loss[:n], self.psq[:n]

    def nesterov(self, g: Any, lr: Any, mu: Any, p: Any, v: Any) -> None:
        tmp = self.tmp.setdefault(p.shape, np.empty_like(p))
        nesterov_step_numpy(p, v, g, lr, mu, tmp)

    def row_cosine(self, P: Any, T: Any, out: Any) -> Any:
        return numpy_row_cosine(P, T, out, self.eps)


class DeviceOps:
    """The CUDA kernels on a device object (:class:`xnetmap.backend.CupyDevice`).

    Parameters are those of :class:`HostOps`, plus ``device``.
    """

    def __init__(self, device: Any, X: Any, Y: Any, batch: int, eps: float):
        xp = self.xp = device.xp
        self.device, self.X, self.Y, self.eps = device, X, Y, eps
        f32 = np.float32
        self.dA = xp.empty((batch, X.shape[1]), f32)
        self.dT = xp.empty((batch, Y.shape[1]), f32)
        self.dloss, self.dpsq = xp.empty(batch, f32), xp.empty(batch, f32)
        self._loss_grad = cuda_loss_grad(device)
        self._nesterov = cuda_nesterov(device)
        self._row_cosine = cuda_row_cosine(device)
        self.dX = self.dY = None
        if X.shape[0] * (X.shape[1] + Y.shape[1]) * 4 <= RESIDENT_SHARE * device.free_bytes():
            self.dX, self.dY = self._upload(X), self._upload(Y)
        else:  # stream: gather each minibatch on the host, then copy it in
            self.bufA = np.empty((batch, X.shape[1]), f32)
            self.bufT = np.empty((batch, Y.shape[1]), f32)

    def _upload(self, M: Any) -> Any:
        D = self.xp.empty(M.shape, np.float32)
        for idx, blk in iter_chunks(M, np.arange(M.shape[0], dtype=np.int64)):
            self.device.copy_in(D[idx[0] : idx[-1] + 1], np.ascontiguousarray(blk))
        return D

    def epoch_batches(self, train: np.ndarray, rng: np.random.Generator,
                      size: int) -> Iterator[tuple[Any, Any, Any]]:
        return self.batches(rng.permutation(train), size)

    def batches(self, rows: np.ndarray, size: int) -> Iterator[tuple[Any, Any, Any]]:
        xp = self.xp
        if self.dX is not None:  # device-resident data: one index upload per pass
            rows_d = self.device.upload(rows)
            for s in range(0, len(rows), size):
                idx = rows_d[s : s + size]
                n = len(idx)
                A, T = self.dA[:n], self.dT[:n]
                xp.take(self.dX, idx, axis=0, out=A)
                xp.take(self.dY, idx, axis=0, out=T)
                yield A, T, None
            return
        for s in range(0, len(rows), size):
            idx = np.sort(rows[s : s + size])
            n = len(idx)
            A, T = self.dA[:n], self.dT[:n]
            self.device.copy_in(A, take_into(self.X, idx, self.bufA))
            self.device.copy_in(T, take_into(self.Y, idx, self.bufT))
            yield A, T, None

    def loss_grad(self, P: Any, b: Any, T: Any, aux: Any, scale: float,
                  colsum: Any) -> tuple[Any, Any]:
        n = P.shape[0]
        loss, psq = self.dloss[:n], self.dpsq[:n]
        P += b
        self._loss_grad(P, T, loss, psq, scale, self.eps)
        self.xp.sum(P, axis=0, out=colsum)
        return loss, psq

    def nesterov(self, g: Any, lr: Any, mu: Any, p: Any, v: Any) -> None:
        self._nesterov(g, lr, mu, p, v)

    def row_cosine(self, P: Any, T: Any, out: Any) -> Any:
        return self._row_cosine(P, T, out, self.eps)


def make_ops(device: Any, X: Any, Y: Any, train: np.ndarray, batch: int,
             eps: float, shuffle: str = "auto") -> HostOps | DeviceOps:
    """The operations for ``device`` (chosen once, here, from what the device can run)."""
    if hasattr(device, "raw_kernel"):
        return DeviceOps(device, X, Y, batch, eps)
    return HostOps(X, Y, train, batch, eps, shuffle)


def _load(M: Any) -> np.ndarray:
    """A small memory-mapped matrix or store read into memory (float32, C order)."""
    out = np.empty(M.shape, np.float32)
    for idx, blk in iter_chunks(M, np.arange(M.shape[0], dtype=np.int64)):
        out[idx[0] : idx[-1] + 1] = blk
    return out
