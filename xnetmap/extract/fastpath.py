"""Vectorised preprocessing for in-memory uint8 array datasets (IDX, .npy, .npz).

When no resize or crop is needed (the array's images already have the
network's size), preprocessing a batch is one NumPy expression instead of a
Pillow image per sample. It computes exactly what
:meth:`xnetmap.data.PreprocessSpec.apply` computes on
:func:`xnetmap.data.decode.image_from_array`'s image (the same float32
multiply-add), so stores are bit-identical either way; the tests check it.

NOTE: reads the dataset's backing array through private attributes of
:class:`xnetmap.data.Dataset` (``_source.array``, ``_index``); when they are
absent (file datasets, or a future Dataset without them) the caller falls back
to the per-image path.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .pipeline import PreparedBatch


def array_batch_preparer(ds, spec) -> Callable[[np.ndarray], PreparedBatch] | None:
    """``prepare(indices) -> PreparedBatch`` for ``ds`` under ``spec``, or None when not exact.

    Parameters
    ----------
    ds : xnetmap.data.Dataset
    spec : xnetmap.data.PreprocessSpec

    Returns
    -------
    callable or None
        None when the dataset is not a uint8 array or the spec resizes, crops or
        converts RGB to L (those go through Pillow per image).
    """
    source = getattr(ds, "_source", None)
    return array_preparer(getattr(source, "array", None), spec, getattr(ds, "_index", None))


def array_preparer(arr, spec, index=None) -> Callable[[np.ndarray], PreparedBatch] | None:
    """``prepare(indices) -> PreparedBatch`` over rows ``index[indices]`` of the uint8 array
    ``arr`` (rows ``indices`` when ``index`` is None), or None when not exact.

    The Ray engine calls it on the array slice a worker receives, the local engine on
    the dataset's whole array: the same expression, so the same bytes.
    """
    affine = getattr(spec, "_affine", None)
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or affine is None:
        return None
    if arr.ndim == 4 and arr.shape[3] == 1:
        channels = 1
    elif arr.ndim == 3:
        channels = 1
    elif arr.ndim == 4 and arr.shape[3] in (3, 4):
        channels = 3
    else:
        return None
    H, W = int(arr.shape[1]), int(arr.shape[2])
    if spec.geometry(W, H) != (None, None):
        return None
    if channels == 3 and spec.colour == "L":
        return None  # Pillow's luma conversion: keep the per-image path
    a, b = affine
    out_c = 1 if spec.colour == "L" else 3

    def prepare(indices: np.ndarray) -> PreparedBatch:
        rows = indices if index is None else index[indices]
        x = arr[np.asarray(rows, dtype=np.int64)]
        if x.ndim == 3:
            x = x[:, :, :, None]
        x = x[:, :, :, :3].astype(np.float32)
        if out_c == 3 and x.shape[3] == 1:
            x = np.repeat(x, 3, axis=3)  # Pillow's L -> RGB copies the grey value
        if spec.channel_order == "BGR":
            x = x[:, :, :, ::-1]
        x = x * a + b
        if spec.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        X = np.ascontiguousarray(x, dtype=np.float32)
        return PreparedBatch(np.asarray(indices, dtype=np.int64), X,
                             np.ones(len(indices), dtype=bool), {})

    return prepare
