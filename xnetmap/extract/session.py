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


# Models above this size are not cached as optimized copies (a copy costs disk and time).
_OPT_CACHE_MAX_BYTES = 1 << 30


def optimized_cache_dir() -> Path:
    """Where optimized CPU sessions are cached: ``$XNETMAP_CACHE`` or ``~/.cache/xnetmap``."""
    root = os.environ.get("XNETMAP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "xnetmap"
    )
    return Path(root) / "ort-optimized"


def _cpu_signature() -> str:
    """The CPU features an optimized graph may depend on (NCHWc block sizes, ISA kernels)."""
    import platform

    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{flags.strip()}"


def _optimized_key(path: Path, model_sha256: str | None) -> str | None:
    """Cache key of ``path``'s optimized CPU graph, or None when it must not be cached."""
    import hashlib

    import onnxruntime as ort

    from ..graph.external_data import may_reference_external_data

    if path.stat().st_size > _OPT_CACHE_MAX_BYTES or may_reference_external_data(path):
        # The key hashes the .onnx file only: weights stored beside it could change
        # without changing the key, so such models are never cached.
        return None
    if model_sha256 is None:
        from ..fsutil import file_sha256

        model_sha256 = file_sha256(path)
    blob = "|".join([model_sha256, ort.__version__, "ORT_ENABLE_ALL", _cpu_signature()])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def make_session(model_path: str | os.PathLike, device: str = "cpu", *, threads: int | None = None,
                 model_sha256: str | None = None, cache_optimized: bool = True):
    """Open an onnxruntime session on ``device`` with sensible thread settings.

    On the CPU the graph optimised by onnxruntime (``ORT_ENABLE_ALL``) is cached on
    disk (:func:`optimized_cache_dir`), keyed by the model's sha256, the onnxruntime
    version and the CPU's features, so that the next session of the same model
    skips the optimisation (0.3 s of a ResNet-50's start-up here). A cache entry
    that onnxruntime cannot load is deleted and the model is optimised again.

    Parameters
    ----------
    model_path : path
        ONNX file.
    device : {"cpu", "cuda", "auto"}
        ``cuda`` must obtain the CUDA execution provider or this raises.
    threads : int, optional
        Intra-op threads; default: all cores this process may use.
    model_sha256 : str, optional
        The file's sha256 when the caller already knows it (saves hashing it again).
    cache_optimized : bool
        Use and fill the optimized-graph cache (CPU only).

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
        sess = None
        if dev == "cpu" and cache_optimized:
            sess = _cached_cpu_session(ort, path, opts, providers, model_sha256)
        if sess is None:
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


def _cached_cpu_session(ort, path: Path, opts, providers, model_sha256):
    """A CPU session from the optimized-graph cache (filling it on a miss); None to skip."""
    import tempfile

    try:
        key = _optimized_key(path, model_sha256)
    except OSError:
        return None
    if key is None:
        return None
    folder = optimized_cache_dir()
    cached = folder / f"{key}.onnx"
    if cached.is_file():
        fast = ort.SessionOptions()
        fast.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        fast.execution_mode = opts.execution_mode
        fast.intra_op_num_threads = opts.intra_op_num_threads
        fast.inter_op_num_threads = opts.inter_op_num_threads
        fast.log_severity_level = opts.log_severity_level
        fast.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(cached), sess_options=fast, providers=providers)
        except Exception:
            cached.unlink(missing_ok=True)  # stale or damaged entry: optimise again
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".onnx", dir=folder)
        os.close(fd)
    except OSError:
        return None  # no writable cache: a plain session
    opts.optimized_model_filepath = tmp
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        if Path(tmp).stat().st_size > 0:
            os.replace(tmp, cached)
        return sess
    except Exception:
        return None  # could not write the optimized copy: the caller opens a plain session
    finally:
        opts.optimized_model_filepath = ""
        Path(tmp).unlink(missing_ok=True)


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
