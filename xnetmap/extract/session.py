"""onnxruntime sessions: providers, thread settings, CUDA I/O binding.

A requested CUDA provider that the session did not actually obtain is an error
(:class:`~xnetmap.errors.DeviceUnavailable`, exit 2), never a silent CPU run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeviceUnavailable, InputError, ModelRejected, UsageError

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def cpu_count() -> int:
    """Cores this process may use (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_session_device(device: str) -> str:
    """Map ``cpu``/``cuda``/``auto`` to ``cpu`` or ``cuda`` for onnxruntime.

    Unlike :func:`xnetmap.backend.resolve_device`, extraction does not need CuPy:
    ``cuda`` only needs onnxruntime's CUDA provider. ``auto`` picks CUDA when the
    backend sees a usable GPU.
    """
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        return "cuda"
    if device == "auto":
        from ..backend import resolve_device

        return resolve_device("auto")
    raise UsageError(f"--device {device!r} is not one of cpu, cuda, auto")


def make_session(model_path: str | os.PathLike, device: str = "cpu", *, threads: int | None = None):
    """Open an onnxruntime session on ``device`` with sensible thread settings.

    Parameters
    ----------
    model_path : path
        ONNX file.
    device : {"cpu", "cuda", "auto"}
        ``cuda`` must obtain the CUDA execution provider or this raises.
    threads : int, optional
        Intra-op threads; default: all cores this process may use.

    Returns
    -------
    onnxruntime.InferenceSession
        ``session.xnetmap_device`` says which device it really runs on.

    Raises
    ------
    InputError
        The file does not exist.
    ModelRejected
        onnxruntime cannot load the model.
    DeviceUnavailable
        CUDA was requested but the session did not get the CUDA provider.
    """
    import onnxruntime as ort

    path = Path(model_path)
    if not path.is_file():
        raise InputError(f"model {path} does not exist; pass the path of an .onnx file")
    if threads is not None and int(threads) < 0:
        raise UsageError(f"--threads must be >= 0 (0 = all cores), got {threads}")
    dev = resolve_session_device(device)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads) if threads else cpu_count()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # NOTE: no busy-waiting between ops: extraction runs decode threads beside the runtime,
    # and spinning threads burn the cycles they need (measured here: ~10% less CPU per
    # ResNet-50 image and faster small models on a busy 2-core machine).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if dev == "cuda":
        if _CUDA not in ort.get_available_providers():
            raise DeviceUnavailable(
                f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDA execution "
                "provider; install onnxruntime-gpu on a machine with a GPU, or use --device cpu"
            )
        providers: list[Any] = [(_CUDA, {"device_id": 0}), _CPU]
    else:
        providers = [_CPU]
    if dev == "cuda":
        # onnxruntime prints multi-line C++ logs when CUDA libraries are missing; we raise
        # one clear error below instead.
        ort.set_default_logger_severity(4)
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if dev == "cuda" and ("CUDA" in msg or "cuda" in msg):
            raise DeviceUnavailable(
                f"--device cuda: onnxruntime could not start CUDA: {msg}"
            ) from err
        raise ModelRejected(f"onnxruntime cannot load {path}: {msg}") from err
    finally:
        if dev == "cuda":
            ort.set_default_logger_severity(2)
    if dev == "cuda" and _CUDA not in sess.get_providers():
        raise DeviceUnavailable(
            f"--device cuda: onnxruntime did not obtain the CUDA execution provider for {path} "
            f"(got {', '.join(sess.get_providers())}); no usable GPU/driver here. "
            "Use --device cpu or --device auto"
        )
    sess.xnetmap_device = dev  # type: ignore[attr-defined]
    return sess


def session_device(sess) -> str:
    """``cuda`` when the session runs on the CUDA provider, else ``cpu``."""
    return "cuda" if _CUDA in sess.get_providers() else "cpu"


_ORT_NP = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def input_dtype(sess) -> Any:
    """numpy dtype of the session's first input."""
    t = sess.get_inputs()[0].type
    if t not in _ORT_NP:
        raise ModelRejected(f"model input {sess.get_inputs()[0].name!r} has unsupported type {t}")
    return _ORT_NP[t]


class Runner:
    """Runs a single-input session batch by batch; CUDA runs use I/O binding.

    On CUDA the input is copied to the device once per batch, the outputs stay
    bound to device memory and are copied back once per batch (no per-op host
    round trips).

    Parameters
    ----------
    sess : onnxruntime.InferenceSession
    output_names : list of str, optional
        Default: all outputs.
    bind_device : {"cuda", "cpu"}, optional
        Use I/O binding on this device; default ``"cuda"`` for a CUDA session, none
        otherwise (``"cpu"`` exercises the same binding code on any machine).
    """

    def __init__(self, sess, output_names: list[str] | None = None, bind_device=None):
        self.sess = sess
        self.input_name = sess.get_inputs()[0].name
        self.output_names = list(output_names or [o.name for o in sess.get_outputs()])
        self.dtype = input_dtype(sess)
        self.device = session_device(sess)
        self.bind_device = bind_device or ("cuda" if self.device == "cuda" else None)

    def __call__(self, X: np.ndarray) -> list[np.ndarray]:
        """Run on ``X`` (batch first); returns host arrays in ``output_names`` order."""
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if self.bind_device is None:
            return self.sess.run(self.output_names, {self.input_name: X})
        import onnxruntime as ort

        dev = self.bind_device
        binding = self.sess.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(X, dev, 0))
        for name in self.output_names:
            binding.bind_output(name, dev, 0)
        self.sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


def run_model(model_path_or_session, X, *, batch_size: int = 256, device: str = "cpu") -> dict:
    """Run a whole model or a classifier on an in-memory array, batch by batch.

    Parameters
    ----------
    model_path_or_session : path or onnxruntime.InferenceSession
    X : ndarray of shape (n, ...)
        Model input (e.g. features of shape (n, D) for a classifier C). Cast to
        the model's input dtype.
    batch_size : int
    device : {"cpu", "cuda", "auto"}
        Used only when a path is given.

    Returns
    -------
    dict of str to ndarray
        Each output, batches concatenated along axis 0 (shape (n, ...)).
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(model_path_or_session, (str, os.PathLike)):
        sess = make_session(model_path_or_session, device)
    else:
        sess = model_path_or_session
    runner = Runner(sess)
    X = np.asarray(X)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in runner.output_names}
    for start in range(0, max(len(X), 1), batch_size):
        chunk = X[start : start + batch_size]
        if len(chunk) == 0 and len(X) > 0:
            break
        for name, out in zip(runner.output_names, runner(chunk), strict=True):
            parts[name].append(np.asarray(out))
    return {name: np.concatenate(v, axis=0) for name, v in parts.items()}
