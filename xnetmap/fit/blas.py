"""BLAS thread limits (threadpoolctl), shared by the fit's solvers and a study's fit threads.

threadpoolctl lets one Python thread at a time change OpenBLAS's process-wide
thread count (the others' limits are ignored while it holds one), so a limit
for work spread over threads is set by the thread that starts them
(:class:`xnetmap.study.maps.MapFits`), and a solve inside one of them that
finds BLAS already on one thread leaves the count alone.
"""

from __future__ import annotations

import contextlib
from typing import Any

_CONTROLLER: Any = None


def _controller() -> Any:
    """threadpoolctl's view of the BLAS libraries (NumPy's and SciPy's: each has its own)."""
    global _CONTROLLER  # noqa: PLW0603 - one controller: it lists the loaded libraries once
    if _CONTROLLER is None:
        import scipy.linalg  # noqa: F401, PLC0415 - SciPy's own OpenBLAS, loaded to be listed
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def blas_threads() -> int:
    """The BLAS thread count in force now (the largest over the loaded libraries)."""
    counts = [lib.num_threads for lib in _controller().select(user_api="blas").lib_controllers]
    return max(counts, default=1)


def limit(threads: int) -> Any:
    """A context running BLAS on at most ``threads`` threads (restored on exit)."""
    return _controller().limit(limits=max(1, int(threads)), user_api="blas")


def one_thread() -> Any:
    """A context running BLAS on one thread (nothing to do when it already does)."""
    return contextlib.nullcontext() if blas_threads() <= 1 else limit(1)
