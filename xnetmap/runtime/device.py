"""One device rule for the whole product: ``--device cpu|cuda|auto``.

* ``cpu``: onnxruntime's CPU provider and NumPy.
* ``cuda``: onnxruntime's CUDA provider (with I/O binding) and, for fitting, CuPy.
  A ``cuda`` request that cannot get CUDA is an error
  (:class:`~xnetmap.errors.DeviceUnavailable`, exit 2), never a silent CPU run.
* ``auto``: CUDA when both onnxruntime and CuPy see a GPU, else the CPU.
"""

from __future__ import annotations

import functools
import os

from ..backend import has_cupy_gpu
from ..errors import DeviceUnavailable, UsageError

DEVICES = ("cpu", "cuda", "auto")
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


@functools.lru_cache(maxsize=1)
def has_ort_cuda() -> bool:
    """True when onnxruntime offers the CUDA execution provider and a GPU is there.

    onnxruntime-gpu lists its CUDA provider on any machine; CuPy seeing a device is
    what says a GPU is present.
    """
    try:
        import onnxruntime as ort  # noqa: PLC0415

        return CUDA_PROVIDER in ort.get_available_providers() and has_cupy_gpu()
    except Exception:  # noqa: BLE001 - a broken onnxruntime install: no CUDA
        return False


def resolve_device(device: str, *, needs_cupy: bool = True) -> str:
    """Map ``cpu``/``cuda``/``auto`` to ``cpu`` or ``cuda``.

    Parameters
    ----------
    device : {"cpu", "cuda", "auto"}
    needs_cupy : bool
        The caller fits on the device (CuPy required for ``cuda``). Extraction
        alone needs only onnxruntime's CUDA provider, which the session checks
        when it is created.

    Raises
    ------
    UsageError
        ``device`` is not one of cpu, cuda, auto.
    DeviceUnavailable
        ``cuda`` (with ``needs_cupy``) and CuPy sees no GPU.
    """
    if device not in DEVICES:
        raise UsageError(f"--device {device!r} is not one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda" if has_ort_cuda() else "cpu"
    if needs_cupy and not has_cupy_gpu():
        raise DeviceUnavailable(
            "--device cuda: CuPy cannot see a CUDA GPU here; install the 'cuda' extra "
            "(pip install 'xnetmap[cuda]') on a machine with a GPU, or use --device cpu"
        )
    return "cuda"


def cpu_count() -> int:
    """Cores this process may use (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
