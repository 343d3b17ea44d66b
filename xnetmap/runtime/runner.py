"""Running an ONNX part over arrays: batch by batch, CUDA runs through I/O binding."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ModelRejected, UsageError
from .device import CUDA_PROVIDER
from .session import make_session

_ORT_NP = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def session_device(sess) -> str:
    """``cuda`` when the session runs on the CUDA provider, else ``cpu``."""
    return "cuda" if CUDA_PROVIDER in sess.get_providers() else "cpu"


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


def run_model(model_or_session, X, *, batch_size: int = 256, device: str = "cpu",
              outputs: list[str] | None = None) -> dict:
    """Run a whole model, F, C or a stitched model on an in-memory array, batch by batch.

    Parameters
    ----------
    model_or_session : path or onnxruntime.InferenceSession
    X : ndarray of shape (n, ...)
        Model input (e.g. features of shape (n, D) for a classifier C). Cast to
        the model's input dtype.
    batch_size : int
    device : {"cpu", "cuda", "auto"}
        Used only when a path is given.
    outputs : list of str, optional
        Outputs to compute (default: all).

    Returns
    -------
    dict of str to ndarray
        Each output, batches concatenated along axis 0 (shape (n, ...)).
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(model_or_session, (str, os.PathLike)):
        sess = make_session(model_or_session, device)
    else:
        sess = model_or_session
    runner = Runner(sess, outputs)
    X = np.asarray(X)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in runner.output_names}
    for start in range(0, max(len(X), 1), batch_size):
        chunk = X[start : start + batch_size]
        if len(chunk) == 0 and len(X) > 0:
            break
        for name, out in zip(runner.output_names, runner(chunk), strict=True):
            parts[name].append(np.asarray(out))
    return {name: np.concatenate(v, axis=0) for name, v in parts.items()}
