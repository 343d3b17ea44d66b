"""The split certificate: does C(F(x)) reproduce the original model?

Runs the original model and the two parts with onnxruntime's CPU provider on
the same inputs, one after another (each session is released before the next
one loads, so peak memory stays near one copy of the model's weights), and
compares every output C keeps. Pass criterion, per
output: ``|a - b| <= atol + rtol * |b|`` elementwise (numpy ``allclose``),
with ``a`` from C(F(x)) and ``b`` from the original. Recorded: max absolute
difference, max relative difference (``max|a - b| / max|b|``, relative to the
output's scale, so near-zero entries do not blow it up) and top-1 agreement
of the logits. A NaN never equals anything: an output with a NaN or an
infinity where the other side differs fails, and a model whose outputs hold NaN
never passes (``non_finite`` counts them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ..data import PreprocessSpec, open_dataset, preprocess_sample
from ..errors import InputError, ModelRejected
from ..runtime import make_session
from .load import DEFAULT_SPATIAL, MAX_INPUT_ELEMENTS, MAX_RANK, check_input_size
from .model_info import model_preprocess

#: (atol, rtol) defaults per precision.
TOLERANCES = {"fp32": (1e-4, 1e-3), "fp16": (2e-2, 2e-2)}


def cpu_session(path: Path):
    """A CPU session for the certificate: two threads, no optimised-graph cache, and no
    weight prepacking.

    NOTE: prepacking copies every Gemm/MatMul weight into a packed buffer while the
    (memory-mapped) original stays: twice the weights resident. The certificate runs a
    few inputs, so it gives that speed-up away.
    """
    return make_session(path, "cpu", threads=2, cache_optimized=False, prepack=False)


def cpu_session_from_bytes(data: bytes):
    """A CPU session for an in-memory model that already passed onnx.checker."""
    return make_session(data, "cpu", threads=2, cache_optimized=False)


def input_spec(model: onnx.ModelProto, input_name: str) -> tuple[np.dtype, list]:
    """(numpy dtype, dims) of a graph input; dims are ints or names.

    Raises
    ------
    ModelRejected
        The input is not a tensor of a NumPy-representable type, or its declared
        shape is too large to build (rank, element count; checked before any
        allocation).
    """
    for vi in model.graph.input:
        if vi.name == input_name:
            tt = vi.type.tensor_type
            dims = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tt.shape.dim
            ]
            try:
                dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
            except (KeyError, TypeError, ValueError):
                raise ModelRejected(
                    f"input {input_name!r} has element type {tt.elem_type}, for which xnetmap "
                    "cannot make inputs; image classifiers take float or integer tensors"
                ) from None
            check_input_size(input_name, dims, "model")
            return dtype, dims
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
    if len(dims) > MAX_RANK:
        raise ModelRejected(f"an input of rank {len(dims)} cannot be built (at most {MAX_RANK})")
    symbolic = [i for i, d in enumerate(dims[1:], start=1) if not isinstance(d, int) or d <= 0]
    for i, d in enumerate(dims[1:], start=1):
        if isinstance(d, int) and d > 0:
            shape.append(d)
            continue
        if spatial is not None and len(symbolic) == 2 and i in symbolic:
            shape.append(int(spatial[symbolic.index(i)]))
        else:
            shape.append(DEFAULT_SPATIAL)
    if symbolic:
        notes.append(
            f"symbolic input dims {[dims[i] for i in symbolic]} "
            f"set to {[shape[i] for i in symbolic]}"
        )
    count = 1
    for d in shape:
        count *= max(d, 0)
    if count > MAX_INPUT_ELEMENTS:
        raise ModelRejected(
            f"{n} inputs of shape {shape[1:]} are {count:.3g} elements, over xnetmap's limit "
            f"of {MAX_INPUT_ELEMENTS:,}; use fewer --samples or a smaller input size"
        )
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        X = rng.integers(0, 2, size=shape).astype(bool)
    elif np.issubdtype(dtype, np.integer):
        X = rng.integers(0, 256, size=shape).astype(dtype)
    elif dtype in (np.float32, np.float64):
        X = rng.standard_normal(shape, dtype=dtype)  # no float64 temporary for float32
    else:
        X = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    return X, notes


def image_inputs(model, images: Path, n: int) -> tuple[np.ndarray, list[str]]:
    """Up to ``n`` real images from a folder, preprocessed as the model says.

    ``model`` is a loaded ModelProto (what split already has) or a model path.
    """
    ds = open_dataset(images)
    if isinstance(model, onnx.ModelProto):
        spec, notes = PreprocessSpec.from_model(model)
    else:
        spec, notes = model_preprocess(model)
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


def _run_released(path: Path, feeds: dict, names: list[str], batch: int | None) -> list:
    """Load ``path``, run it, release the session before returning: only one
    model's weights are resident at a time."""
    session = cpu_session(path)
    try:
        return _run(session, feeds, names, batch)
    except Exception as err:  # noqa: BLE001 - onnxruntime's own error types
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelRejected(
            f"onnxruntime cannot run {path} on the certificate's inputs: {first}"
        ) from None
    finally:
        del session  # its last reference: freed now (a full gc.collect cost ~30 ms a model)


def compare_output(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> dict:
    """Figures for one output: ``a`` from C(F(x)), ``b`` from the original.

    NaN never equals NaN here: a NaN or an infinity on either side fails unless
    both sides hold the same infinity, and ``non_finite`` counts the entries that
    are not finite on either side.
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a64.shape != b64.shape:
        return {"shape_mismatch": [list(a64.shape), list(b64.shape)], "within_tolerance": False}
    finite = np.isfinite(a64) & np.isfinite(b64)
    both = np.where(finite, a64, 0.0), np.where(finite, b64, 0.0)
    diff = np.abs(both[0] - both[1])
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(both[1]).max(initial=0.0))
    non_finite = int(np.count_nonzero(~finite))
    ok = non_finite == 0 and bool(np.allclose(a64, b64, atol=atol, rtol=rtol, equal_nan=False))
    return {
        "max_abs_diff": max_abs,
        "max_rel_diff": max_abs / scale if scale > 0 else max_abs,
        "non_finite": non_finite,
        "within_tolerance": ok,
    }


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

    The three models run one after another, each session released before the
    next loads. An output holding NaN or infinity fails the certificate.

    Parameters
    ----------
    X : ndarray of shape (n_samples, ...)
        Inputs matching the model's input.

    Returns
    -------
    dict
        ``passed``, ``max_abs_diff``, ``max_rel_diff``, ``top1_agreement``,
        ``non_finite`` (entries not finite on either side), per-output figures,
        ``atol``, ``rtol``, ``samples``.
    """
    want = _run_released(model_path, {input_name: X}, output_names, fixed_batch)
    (F,) = _run_released(features_path, {input_name: X}, ["features"], fixed_batch)
    got = _run_released(classifier_path, {"features": F}, output_names, fixed_batch)
    per_output = {}
    top1 = None
    for name, a, b in zip(output_names, got, want, strict=True):
        per_output[name] = compare_output(a, b, atol, rtol)
        if name == logits_name and "max_abs_diff" in per_output[name]:
            flat_a, flat_b = np.reshape(a, (len(a), -1)), np.reshape(b, (len(b), -1))
            top1 = float(np.mean(flat_a.argmax(1) == flat_b.argmax(1))) if len(a) else None
    figures = [v for v in per_output.values() if "max_abs_diff" in v]
    return {
        "passed": all(v["within_tolerance"] for v in per_output.values()),
        "samples": int(len(X)),
        "atol": atol,
        "rtol": rtol,
        "max_abs_diff": max((v["max_abs_diff"] for v in figures), default=None),
        "max_rel_diff": max((v["max_rel_diff"] for v in figures), default=None),
        "non_finite": sum(v["non_finite"] for v in figures),
        "top1_agreement": top1,
        "outputs": per_output,
        "provider": "CPUExecutionProvider",
        "feature_shape": list(F.shape),
    }
