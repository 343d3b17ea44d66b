"""The runtime: the only package that talks to onnxruntime.

Device resolution (``cpu``/``cuda``/``auto`` and the CUDA refusal rule), session
creation (providers, threads, the optimised-graph cache) and running any ONNX
part (F, C, a probe, a stitched model) over arrays, with I/O binding on CUDA.
"""

from .device import DEVICES, cpu_count, has_ort_cuda, resolve_device
from .runner import Runner, input_dtype, run_model, session_device
from .session import make_session, optimized_cache_dir

__all__ = [
    "DEVICES",
    "Runner",
    "cpu_count",
    "has_ort_cuda",
    "input_dtype",
    "make_session",
    "optimized_cache_dir",
    "resolve_device",
    "run_model",
    "session_device",
]
