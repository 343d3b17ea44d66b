"""The only module that imports CuPy. Picks the array module (numpy or cupy) once.

Numerical code takes ``xp`` from here (or from :func:`get_array_module`) and never
branches on the device itself.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .errors import DeviceUnavailable


@functools.lru_cache(maxsize=1)
def _cupy_or_none() -> Any:
    try:
        import cupy  # noqa: PLC0415

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # ImportError, CUDARuntimeError, missing driver libraries...
        return None


def has_cupy_gpu() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return _cupy_or_none() is not None


def array_module(device: str) -> Any:
    """numpy for ``cpu``, cupy for ``cuda`` (after :func:`xnetmap.runtime.resolve_device`)."""
    if device == "cuda":
        cp = _cupy_or_none()
        if cp is None:
            raise DeviceUnavailable("--device cuda: CuPy cannot see a CUDA GPU; use --device cpu")
        return cp
    return np


def get_array_module(*arrays: Any) -> Any:
    """numpy or cupy, whichever owns ``arrays`` (numpy when CuPy is absent)."""
    cp = _cupy_or_none()
    if cp is not None:
        return cp.get_array_module(*arrays)
    return np


def to_numpy(a: Any) -> np.ndarray:
    """A host copy of a numpy or cupy array."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    return np.asarray(get() if get is not None else a)
