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


class HostDevice:
    """The CPU as a compute device: arrays are NumPy arrays, nothing is copied.

    The gradient-descent loop (:mod:`xnetmap.fit.gd`) talks to a device object
    (this or :class:`CupyDevice`) and never asks which one it has.
    """

    name = "cpu"
    xp = np
    synchronous = True  # a wall-clock time around a call measures the call

    def upload(self, a: Any, dtype: Any = None) -> np.ndarray:
        """``a`` as an array of this device (no copy when it already is one)."""
        return np.asarray(a, dtype=dtype)

    def to_host(self, a: Any) -> np.ndarray:
        """A host array with the values of ``a`` (no copy on the CPU)."""
        return np.asarray(a)

    def free_bytes(self) -> int:
        """Memory the fit may place on this device (0: keep the data where they are)."""
        return 0


class CupyDevice:
    """A CUDA GPU through CuPy; compiles the fit's kernels from their CUDA source."""

    name = "cuda"
    synchronous = False  # launches return at once; only a copy to the host waits

    def __init__(self, cp: Any):
        self.xp = cp

    def upload(self, a: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)

    def copy_in(self, dst: Any, src: np.ndarray) -> None:
        """Copy the host array ``src`` into the device array ``dst`` (same shape)."""
        dst.set(src)

    def free_bytes(self) -> int:
        return int(self.xp.cuda.Device().mem_info[0])

    def raw_kernel(self, source: str, name: str) -> Any:
        """``cp.RawKernel`` of ``source`` (compiled on first launch, cached by CuPy)."""
        return self.xp.RawKernel(source, name)

    def elementwise_kernel(self, in_params: str, out_params: str, body: str, name: str) -> Any:
        """``cp.ElementwiseKernel`` with the given parameter lists and loop body."""
        return self.xp.ElementwiseKernel(in_params, out_params, body, name)


def compute_device(device: str) -> HostDevice | CupyDevice:
    """The device object for ``cpu`` or ``cuda`` (after :func:`resolve_device`)."""
    if device == "cuda":
        return CupyDevice(array_module("cuda"))
    return HostDevice()
