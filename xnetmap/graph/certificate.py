"""The split certificate: does C(F(x)) reproduce the original model?

Runs the original model and the two parts with onnxruntime's CPU provider on
the same inputs and compares every output C keeps. Pass criterion, per
output: ``|a - b| <= atol + rtol * |b|`` elementwise (numpy ``allclose``),
with ``a`` from C(F(x)) and ``b`` from the original. Recorded: max absolute
difference, max relative difference (``max|a - b| / max|b|``, relative to the
output's scale, so near-zero entries do not blow it up) and top-1 agreement
of the logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ..errors import InputError, ModelRejected

#: (atol, rtol) defaults per precision.
TOLERANCES = {"fp32": (1e-4, 1e-3), "fp16": (2e-2, 2e-2)}
DEFAULT_SPATIAL = 224


def cpu_session(path: Path):
    """An onnxruntime CPU session with small thread pools (shared machines)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime's own error types
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelRejected(f"onnxruntime cannot load {path}: {first}") from None


def cpu_session_from_bytes(data: bytes):
    """A CPU session for an in-memory model that already passed onnx.checker."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def input_spec(model: onnx.ModelProto, input_name: str) -> tuple[np.dtype, list]:
    """(numpy dtype, dims) of a graph input; dims are ints or names."""
    for vi in model.graph.input:
        if vi.name == input_name:
            tt = vi.type.tensor_type
            dims = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tt.shape.dim
            ]
            return onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type), dims
    raise InputError(f"model has no input named {input_name!r}")


def random_inputs(
    dtype: np.dtype, dims: list, n: int, *, spatial: tuple[int, int] | None = None, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """``n`` random inputs matching the input spec (standard normal; 0..255 for ints).

    Returns
    -------
    X : ndarray of shape (n, *dims[1:])
    notes : list of str
        What was assumed for symbolic non-batch dims.
    """
    notes = []
    shape = [n]
    symbolic = [i for i, d in enumerate(dims[1:], start=1) if not isinstance(d, int) or d <= 0]
    for i, d in enumerate(dims[1:], start=1):
        if isinstance(d, int) and d > 0:
            shape.append(d)
            continue
        if spatial is not None and len(symbolic) == 2 and i in symbolic:
            shape.append(spatial[symbolic.index(i)])
        else:
            shape.append(DEFAULT_SPATIAL)
    if symbolic:
        notes.append(
            f"symbolic input dims {[dims[i] for i in symbolic]} "
            f"set to {[shape[i] for i in symbolic]}"
        )
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        X = rng.integers(0, 256, size=shape).astype(dtype)
    elif dtype == np.bool_:
        X = rng.integers(0, 2, size=shape).astype(bool)
    else:
        X = rng.standard_normal(shape).astype(dtype)
    return X, notes


def image_inputs(model_path: Path, images: Path, n: int) -> tuple[np.ndarray, list[str]]:
    """Up to ``n`` real images from a folder, preprocessed as the model says."""
    from ..data import open_dataset, preprocess_sample
    from .model_info import model_preprocess

    ds = open_dataset(images)
    spec, notes = model_preprocess(model_path)
    rows = []
    for i in range(len(ds)):
        if len(rows) == n:
            break
        try:
            rows.append(preprocess_sample(ds, i, spec))
        except Exception as err:  # noqa: BLE001 - UnreadableImage: skip it, say so
            notes.append(f"skipped unreadable image {ds.ids[i]}: {getattr(err, 'reason', err)}")
    if not rows:
        raise InputError(f"no readable images in {images}")
    return np.stack(rows), list(notes)


def _run(session, feeds: dict, names: list[str] | None, batch: int | None) -> list[np.ndarray]:
    ((input_name, X),) = feeds.items()
    if batch is None or batch == len(X):
        return session.run(names, {input_name: X})
    chunks = [session.run(names, {input_name: X[i : i + batch]}) for i in range(0, len(X), batch)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def certify(
    model_path: Path,
    features_path: Path,
    classifier_path: Path,
    X: np.ndarray,
    *,
    input_name: str,
    logits_name: str,
    output_names: list[str],
    atol: float,
    rtol: float,
    fixed_batch: int | None = None,
) -> dict:
    """Compare the original model with C(F(X)).

    Parameters
    ----------
    X : ndarray of shape (n_samples, ...)
        Inputs matching the model's input.

    Returns
    -------
    dict
        ``passed``, ``max_abs_diff``, ``max_rel_diff``, ``top1_agreement``,
        per-output figures, ``atol``, ``rtol``, ``samples``.
    """
    original = cpu_session(model_path)
    features = cpu_session(features_path)
    classifier = cpu_session(classifier_path)
    want = _run(original, {input_name: X}, output_names, fixed_batch)
    (F,) = _run(features, {input_name: X}, ["features"], fixed_batch)
    got = _run(classifier, {"features": F}, output_names, fixed_batch)
    per_output = {}
    passed = True
    top1 = None
    for name, a, b in zip(output_names, got, want, strict=True):
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a64.shape != b64.shape:
            per_output[name] = {"shape_mismatch": [list(a64.shape), list(b64.shape)]}
            passed = False
            continue
        diff = np.abs(a64 - b64)
        finite = np.isfinite(b64)
        max_abs = float(np.max(diff, where=finite, initial=0.0))
        scale = float(np.max(np.abs(b64), where=finite, initial=0.0))
        ok = bool(np.allclose(a64, b64, atol=atol, rtol=rtol, equal_nan=True))
        per_output[name] = {
            "max_abs_diff": max_abs,
            "max_rel_diff": max_abs / scale if scale > 0 else max_abs,
            "within_tolerance": ok,
        }
        passed &= ok
        if name == logits_name:
            flat_a, flat_b = a64.reshape(len(a64), -1), b64.reshape(len(b64), -1)
            top1 = float(np.mean(flat_a.argmax(1) == flat_b.argmax(1)))
    figures = [v for v in per_output.values() if "max_abs_diff" in v]
    return {
        "passed": bool(passed),
        "samples": int(len(X)),
        "atol": atol,
        "rtol": rtol,
        "max_abs_diff": max((v["max_abs_diff"] for v in figures), default=None),
        "max_rel_diff": max((v["max_rel_diff"] for v in figures), default=None),
        "top1_agreement": top1,
        "outputs": per_output,
        "provider": "CPUExecutionProvider",
        "feature_shape": list(F.shape),
    }
