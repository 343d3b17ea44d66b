"""onnxruntime sessions: providers, thread settings, the optimised-graph cache.

The one place that creates ``onnxruntime.InferenceSession`` objects, for every
ONNX part xnetmap runs (a whole model, F, C, a probe, a stitched model). A
requested CUDA provider that the session did not actually obtain is an error
(:class:`~xnetmap.errors.DeviceUnavailable`, exit 2), never a silent CPU run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..cache import ORT_OPTIMIZED, cache_root
from ..errors import DeviceUnavailable, InputError, ModelRejected, UsageError
from ..fsutil import file_sha256, may_reference_external_data
from .device import CPU_PROVIDER, CUDA_PROVIDER, cpu_count, resolve_device

# Models above this size are not cached as optimized copies (a copy costs disk and time).
_OPT_CACHE_MAX_BYTES = 1 << 30


def optimized_cache_dir() -> Path:
    """Where optimized CPU graphs are cached: the ``ort-optimized`` folder of the cache."""
    return cache_root() / ORT_OPTIMIZED


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


def _optimized_key(ort, path: Path, model_sha256: str | None) -> str | None:
    """Cache key of ``path``'s optimized CPU graph, or None when it must not be cached."""
    import hashlib

    if path.stat().st_size > _OPT_CACHE_MAX_BYTES or may_reference_external_data(path):
        # The key hashes the .onnx file only: weights stored beside it could change
        # without changing the key, so such models are never cached.
        return None
    digest = model_sha256 or file_sha256(path)
    blob = "|".join([digest, ort.__version__, "ORT_ENABLE_ALL", _cpu_signature()])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _options(ort, threads: int | None, optimize: bool = True, prepack: bool = True):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads) if threads else cpu_count()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # NOTE: no busy-waiting between ops: extraction runs decode threads beside the runtime,
    # and spinning threads burn the cycles they need (measured here: ~10% less CPU per
    # ResNet-50 image and faster small models on a busy 2-core machine).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not prepack:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    return opts


def _providers(ort, dev: str) -> list[Any]:
    if dev != "cuda":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER not in ort.get_available_providers():
        raise DeviceUnavailable(
            f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDA execution "
            "provider; install onnxruntime-gpu on a machine with a GPU, or use --device cpu"
        )
    return [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]


def make_session(model: str | os.PathLike | bytes, device: str = "cpu", *,
                 threads: int | None = None, model_sha256: str | None = None,
                 cache_optimized: bool = True, prepack: bool = True, name: str | None = None):
    """Open an onnxruntime session on ``device`` with sensible thread settings.

    On the CPU the optimised graph (``ORT_ENABLE_ALL``) is cached (:func:`optimized_cache_dir`),
    keyed by the model's sha256, the onnxruntime version and the CPU's features: the next
    session skips the optimisation (0.3 s of a ResNet-50's start-up here).

    Parameters
    ----------
    model, name : path or bytes; str, optional
        An ONNX file, or a serialized model already checked by the caller (errors call
        it ``name``: the file it was read from).
    device : {"cpu", "cuda", "auto"}
        ``cuda`` must obtain the CUDA execution provider or this raises.
    threads : int, optional
        Intra-op threads; default: all cores this process may use.
    model_sha256 : str, optional
        The file's sha256 when the caller already knows it (saves hashing it again).
    cache_optimized : bool
        Use and fill the optimized-graph cache (CPU, files only).
    prepack : bool
        Let onnxruntime prepack Gemm/MatMul weights (faster runs, a second copy of
        the weights in memory); False for one-off runs of big models.

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

    in_memory = isinstance(model, (bytes, bytearray))
    path = Path(name or "<in-memory model>") if in_memory else Path(model)
    if not in_memory and not path.is_file():
        raise InputError(f"model {path} does not exist; pass the path of an .onnx file")
    if threads is not None and int(threads) < 0:
        raise UsageError(f"--threads must be >= 0 (0 = all cores), got {threads}")
    dev = resolve_device(device, needs_cupy=False)
    opts = _options(ort, threads, prepack=prepack)
    providers = _providers(ort, dev)
    if dev == "cuda":
        # onnxruntime prints multi-line C++ logs when CUDA libraries are missing; we raise
        # one clear error below instead.
        ort.set_default_logger_severity(4)
    try:
        sess = None
        if dev == "cpu" and cache_optimized and not in_memory:
            sess = _cached_cpu_session(ort, path, threads, providers, model_sha256)
        if sess is None:
            source = bytes(model) if in_memory else str(path)
            sess = ort.InferenceSession(source, sess_options=opts, providers=providers)
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
    if dev == "cuda" and CUDA_PROVIDER not in sess.get_providers():
        raise DeviceUnavailable(
            f"--device cuda: onnxruntime did not obtain the CUDA execution provider for {path} "
            f"(got {', '.join(sess.get_providers())}); no usable GPU/driver here. "
            "Use --device cpu or --device auto"
        )
    sess.xnetmap_device = dev  # type: ignore[attr-defined]
    return sess


def _cached_cpu_session(ort, path: Path, threads, providers, model_sha256):
    """A CPU session from the optimized-graph cache (filling it on a miss); None to skip."""
    import tempfile

    try:
        key = _optimized_key(ort, path, model_sha256)
    except OSError:
        return None
    if key is None:
        return None
    folder = optimized_cache_dir()
    cached = folder / f"{key}.onnx"
    if cached.is_file():
        try:
            return ort.InferenceSession(str(cached), sess_options=_options(ort, threads, False),
                                        providers=providers)
        except Exception:  # noqa: BLE001
            cached.unlink(missing_ok=True)  # stale or damaged entry: optimise again
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".onnx", dir=folder)
        os.close(fd)
    except OSError:
        return None  # no writable cache: a plain session
    opts = _options(ort, threads)
    opts.optimized_model_filepath = tmp
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        if Path(tmp).stat().st_size > 0:
            os.replace(tmp, cached)
        return sess
    except Exception:  # noqa: BLE001
        return None  # could not write the optimized copy: the caller opens a plain session
    finally:
        Path(tmp).unlink(missing_ok=True)
