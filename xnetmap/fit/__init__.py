"""xnetmap.fit: fit the affine map between two feature spaces.

Public API: :class:`AffineMap` (scikit-learn style estimator, ``.npz`` files) and
:func:`fit_map` (store level: pairs samples by id, skips masked rows).
Submodules: ``kernels`` (the paper's loss and gradient, CUDA + NumPy twin),
``optim`` (Nesterov update, CUDA + NumPy twin), ``gd`` (the minibatch loop),
``solvers`` (lstsq, ridge, Procrustes), ``calibrate``, ``metrics``, ``rows``.
"""

from __future__ import annotations

from .affine_map import AffineMap, NotFittedError
from .fit_map import fit_map

__all__ = ["AffineMap", "NotFittedError", "fit_map"]
