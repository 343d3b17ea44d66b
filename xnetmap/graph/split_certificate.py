"""Run the split certificate (:mod:`xnetmap.graph.certificate`) with what the split
already holds: the loaded model (its input spec, precision and preprocessing
metadata are read from the proto, never from the file again) and the parts
just written or verified."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .certificate import TOLERANCES, certify, image_inputs, input_spec, random_inputs

CERT_BATCH = 8  # certificate inputs per onnxruntime run (bounded memory on big models)


@dataclass(frozen=True)
class CertificateRequest:
    """The certificate a caller asked for (None tolerances: the precision's defaults)."""

    verify: bool
    samples: int
    images: str | Path | None
    atol: float | None
    rtol: float | None

    def accepts(self, certificate: dict | None) -> bool:
        """Whether a recorded certificate answers this request: a failed one never
        does; a passed one does when it used at least as many samples and the
        tolerances asked for."""
        if certificate is None:
            return not self.verify
        if not certificate.get("passed"):
            return False  # never hand out parts whose certificate failed
        if not self.verify:
            return True
        if int(certificate.get("samples", 0)) < self.samples:
            return False
        asked = {"atol": self.atol, "rtol": self.rtol}
        return all(v is None or certificate.get(k) == v for k, v in asked.items())


def precision(model: onnx.ModelProto, types: dict[str, int], input_name: str) -> str:
    """ "fp16" when the model's input, outputs or most float weights are half precision."""
    half = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    if types.get(input_name) in half or any(types.get(o.name) in half for o in model.graph.output):
        return "fp16"
    floats = [t.data_type for t in model.graph.initializer if t.data_type in half | {1, 11}]
    if floats and sum(t in half for t in floats) * 2 > len(floats):
        return "fp16"
    return "fp32"


def spatial_hint(model: onnx.ModelProto) -> tuple[int, int] | None:
    """Image size from the model's ``xnetmap.preprocess`` metadata, if any."""
    for prop in model.metadata_props:
        if prop.key == "xnetmap.preprocess":
            try:
                size = json.loads(prop.value)["size"]
                return int(size[0]), int(size[1])
            except (ValueError, KeyError, TypeError, IndexError):
                return None
    return None


def _inputs(
    model: onnx.ModelProto, input_name: str, request: CertificateRequest
) -> tuple[np.ndarray, list[str], str, int]:
    """Certificate inputs, notes, their source, and the batch to run them in."""
    dtype, dims = input_spec(model, input_name)
    if request.images is not None:
        # the proto, not the path: PreprocessSpec reads the metadata without a parse
        X, notes = image_inputs(model, Path(request.images), request.samples)
        X = X.astype(dtype, copy=False)
        source = f"images from {request.images}"
    else:
        X, notes = random_inputs(dtype, dims, request.samples, spatial=spatial_hint(model))
        source = "random normal inputs (seed 0)"
    fixed = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
    if fixed is not None and len(X) % fixed:
        # a fixed batch dim: pad with repeats of the first inputs to whole batches
        pad = fixed - len(X) % fixed
        X = np.concatenate([X, np.resize(X, (pad, *X.shape[1:]))])
        notes.append(f"input batch is fixed at {fixed}: certified {len(X)} inputs")
    return X, notes, source, fixed if fixed is not None else CERT_BATCH


def run_certificate(
    model: onnx.ModelProto,
    model_path: Path,
    parts: tuple[Path, Path],
    *,
    input_name: str,
    logits_name: str,
    output_names: list[str],
    request: CertificateRequest,
    types: dict[str, int] | None = None,
) -> dict:
    """Certify C(F(x)) against the model, ``parts`` = (F path, C path); returns the
    dict split.json records. ``types``: tensor element types (fp16 detection)."""
    kind = precision(model, types or {}, input_name)
    d_atol, d_rtol = TOLERANCES[kind]
    X, notes, source, batch = _inputs(model, input_name, request)
    certificate = certify(
        model_path,
        parts[0],
        parts[1],
        X,
        input_name=input_name,
        logits_name=logits_name,
        output_names=output_names,
        atol=d_atol if request.atol is None else request.atol,
        rtol=d_rtol if request.rtol is None else request.rtol,
        fixed_batch=batch,
    )
    certificate.update(inputs=source, precision=kind, notes=notes)
    return certificate
