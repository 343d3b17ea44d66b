"""``split_model``: cut a classifier into F (features) and C (classifier), certified.

Files written into ``out_dir`` (default: the model's folder), for a model
``NAME.onnx``: ``NAME.features.onnx``, ``NAME.classifier.onnx`` (plus
``.data`` files when the source keeps weights as external data) and
``NAME.split.json``. Existing outputs are reused when split.json records the
same model sha256, cut and a passed certificate (or no certificate was asked).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from .. import __version__
from ..errors import InputError, InternalError, ModelRejected, UsageError, VerificationFailed
from ..fsutil import file_sha256, make_output_dir
from .certificate import TOLERANCES, certify, image_inputs, input_spec, random_inputs
from .heads import Head, cut_candidates, detect_head
from .index import GraphIndex, feature_width
from .load import load_model, run_checker
from .save import atomic_write_bytes, save_part
from .surgery import build_classifier_part, build_features_part, reachable_nodes

SPLIT_FORMAT = 1
CERT_BATCH = 8  # certificate inputs per onnxruntime run (bounded memory on big models)
DEFINITIONS = ("pooled", "penultimate")


@dataclass(frozen=True)
class SplitResult:
    """What :func:`split_model` wrote. Paths are absolute; ``certificate`` is the
    dict recorded in split.json (None with ``verify=False``)."""

    model_path: Path
    features_path: Path
    classifier_path: Path
    json_path: Path
    cut: str
    cut_tensor: str
    feature_dim: int
    input_name: str
    logits_name: str
    output_names: tuple[str, ...]
    model_sha256: str
    certificate: dict | None

    def to_json(self) -> dict:
        d = asdict(self)
        for key in ("model_path", "features_path", "classifier_path", "json_path"):
            d[key] = str(d[key])
        d["output_names"] = list(self.output_names)
        return d


def model_stem(path: Path) -> str:
    name = path.name
    return name[: -len(".onnx")] if name.lower().endswith(".onnx") else path.stem


def _candidate_text(ix: GraphIndex) -> str:
    return ", ".join(f"{name} {shape}" for name, shape in cut_candidates(ix))


@dataclass(frozen=True)
class _Plan:
    cut_tensor: str
    cut_shape: list
    feature_dim: int
    logits_name: str
    outputs: list[str]
    dropped: list[str]
    head: Head | None
    rewrites: dict


def plan_split(ix: GraphIndex, cut: str, name: str) -> _Plan:
    """Resolve the cut tensor, its shape, and which outputs C can produce."""
    head: Head | None
    if cut in DEFINITIONS:
        head = detect_head(ix, name)
        cut_tensor = head.cut_tensor(cut)
    else:
        try:
            head = detect_head(ix, name)
        except ModelRejected:
            head = None
        cut_tensor = cut
        outputs = {o.name for o in ix.model.graph.output}
        if cut_tensor not in ix.producer or ix.is_const(cut_tensor):
            what = "a graph input" if cut_tensor in ix.graph_inputs else "not a computed tensor"
            if cut_tensor not in ix.graph_inputs and cut_tensor not in ix.initializers:
                what = "not a tensor of this model"
            raise UsageError(
                f"--cut {cut_tensor!r} is {what}; use pooled, penultimate or one of: "
                f"{_candidate_text(ix)} (`xnetmap inspect {name}` lists more)"
            )
        if cut_tensor in outputs:
            raise UsageError(f"--cut {cut_tensor!r} is a model output; cut before the logits")
    shape = ix.shape(cut_tensor)
    width = feature_width(shape)
    if width is None:
        shape = probe_shape(ix, cut_tensor)
        width = feature_width(shape)
    if width is None:
        raise ModelRejected(
            f"{name}: the shape of cut tensor {cut_tensor!r} is unknown after shape inference "
            f"({shape}); choose another --cut (`xnetmap inspect {name}` shows shapes)"
        )
    rewrites = head.rewrites if head is not None else {}
    kept, dropped = [], []
    for out in ix.model.graph.output:
        _, leaves = reachable_nodes(ix, [out.name], {cut_tensor}, rewrites)
        (kept if leaves <= {cut_tensor} and leaves else dropped).append(out.name)
    logits = head.logits_name if head is not None else None
    if logits is None or logits not in kept:
        if not kept:
            raise UsageError(
                f"--cut {cut_tensor!r} does not separate the input from any output: every "
                f"output also depends on tensors before it (skip connections?); choose a tensor "
                f"all outputs flow through, e.g. {_candidate_text(ix)}"
            )
        logits = kept[0]
    return _Plan(cut_tensor, list(shape), width, logits, kept, dropped, head, rewrites)


def probe_shape(ix: GraphIndex, tensor: str) -> list | None:
    """The shape of ``tensor`` measured with onnxruntime on two random inputs, for
    when shape inference cannot tell. Only for models held in memory (no
    external data); returns None otherwise or when the run fails."""
    from .certificate import cpu_session_from_bytes
    from .external_data import is_external, iter_model_tensors

    model = ix.model
    if any(is_external(t) for t in iter_model_tensors(model)) or len(ix.graph_inputs) != 1:
        return None
    nodes, _ = reachable_nodes(ix, [tensor], set())
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    keep = set(nodes)
    kept = [n for i, n in enumerate(model.graph.node) if i in keep]
    del probe.graph.node[:]
    probe.graph.node.extend(kept)
    del probe.graph.output[:]
    elem = ix.types.get(tensor, onnx.TensorProto.FLOAT)
    rank = ix.shape(tensor)
    dims = [None] * len(rank) if rank is not None else None
    probe.graph.output.append(onnx.helper.make_tensor_value_info(tensor, elem, dims))
    try:
        if dims is not None:  # else: a node subset of a model that passed the checker
            onnx.checker.check_model(probe)
        session = cpu_session_from_bytes(probe.SerializeToString())
        dtype, dims = input_spec(model, ix.graph_inputs[0])
        X, _ = random_inputs(dtype, dims, 2)
        (value,) = session.run([tensor], {ix.graph_inputs[0]: X})
    except Exception:  # noqa: BLE001 - the caller reports the unknown shape
        return None
    batch = ix.shape(ix.graph_inputs[0])
    return [batch[0] if batch else "N", *[int(d) for d in value.shape[1:]]]


def data_stamp(model: onnx.ModelProto, model_path: Path) -> list[dict]:
    """Name, size and mtime of each external data file: the model sha256 covers
    only the ``.onnx`` file, so reuse also checks that its weights did not change."""
    from .external_data import validate_external_data

    files = sorted({ref.path for ref in validate_external_data(model, model_path)})
    stamps = []
    for path in files:
        st = path.stat()
        stamps.append(
            {
                "file": str(path.relative_to(model_path.parent)),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
        )
    return stamps


def _reusable(
    json_path: Path, sha: str, cut: str, verify: bool, stamp: list[dict], asked: dict
) -> SplitResult | None:
    """The recorded split when it can stand for this request; ``asked`` holds the
    certificate settings requested (``samples``, ``atol``, ``rtol``; None = default):
    a certificate made with other settings is not reused, it is made again."""
    try:
        record = json.loads(json_path.read_text())
        if record.get("format") != SPLIT_FORMAT or record.get("model_sha256") != sha:
            return None
        if record.get("cut") != cut or record.get("external_data", []) != stamp:
            return None
        cert = record.get("certificate")
        if verify and not (cert and cert.get("passed")):
            return None
        if cert is not None and not cert.get("passed"):
            return None  # never hand out parts whose certificate failed
        if verify and (
            int(cert.get("samples", 0)) < asked["samples"]
            or any(asked[k] is not None and cert.get(k) != asked[k] for k in ("atol", "rtol"))
        ):
            return None  # the user asked for another certificate (more samples, tolerances)
        folder = json_path.parent
        f_path, c_path = folder / record["features_file"], folder / record["classifier_file"]
        if file_sha256(f_path) != record["features_sha256"]:
            return None
        if file_sha256(c_path) != record["classifier_sha256"]:
            return None
        data = [folder / name for name in record.get("data_files", {})]
        if _part_data_stamps(data) != record.get("data_files", {}):
            return None  # a part's weights file was removed or rewritten since
        return SplitResult(
            model_path=Path(record["model_path"]),
            features_path=f_path,
            classifier_path=c_path,
            json_path=json_path,
            cut=cut,
            cut_tensor=record["cut_tensor"],
            feature_dim=int(record["feature_dim"]),
            input_name=record["input_name"],
            logits_name=record["logits_name"],
            output_names=tuple(record["output_names"]),
            model_sha256=sha,
            certificate=cert,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _reusable_unchanged(
    json_path: Path, model_path: Path, cut: str, verify: bool, asked: dict, images
) -> SplitResult | None:
    """Reuse a split without parsing the model again when nothing changed.

    The recorded split was made from a model that passed :func:`load_model`; when
    the file's sha256 and the size/mtime of every external data file it referenced
    are as recorded, it is the same model, and re-parsing and re-checking it (a
    large share of a short run's start-up) can be skipped. Anything else: None,
    and the caller takes the full path (load, check, compare).
    """
    if images is not None or not json_path.is_file() or not model_path.is_file():
        return None
    try:
        record = json.loads(json_path.read_text())
        if record.get("model_sha256") != file_sha256(model_path):
            return None
        stamp = []
        for entry in record.get("external_data", []):
            path = model_path.parent / entry["file"]
            if path.is_symlink():
                return None
            st = path.stat()
            stamp.append({"file": entry["file"], "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return _reusable(json_path, record["model_sha256"], cut, verify, stamp, asked)


def _precision(model: onnx.ModelProto, types: dict[str, int], input_name: str) -> str:
    half = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    if types.get(input_name) in half or any(types.get(o.name) in half for o in model.graph.output):
        return "fp16"
    floats = [t.data_type for t in model.graph.initializer if t.data_type in half | {1, 11}]
    if floats and sum(t in half for t in floats) * 2 > len(floats):
        return "fp16"
    return "fp32"


def split_model(
    model_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    cut: str = "pooled",
    verify: bool = True,
    samples: int = 8,
    images: str | Path | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> SplitResult:
    """Split a classifier into F (input -> features [N, D]) and C (features -> outputs).

    Parameters
    ----------
    model_path : path
        The ONNX classifier (validated by :func:`load_model`).
    out_dir : path, optional
        Where to write the parts; default the model's folder.
    cut : {"pooled", "penultimate"} or str
        A cut definition or any tensor name of the model.
    verify : bool
        Run the certificate (original vs C(F(x)) on ``samples`` inputs).
    samples : int
        Number of certificate inputs.
    images : path, optional
        Folder of real images for the certificate (random inputs otherwise).
    atol, rtol : float, optional
        Certificate tolerances; defaults fit the model's precision (fp32/fp16).

    Returns
    -------
    SplitResult

    Raises
    ------
    InputError, UsageError
        Missing model, bad ``cut`` name or a cut that does not separate the graph (exit 2).
    ModelRejected
        Unsafe/invalid model or no detectable head (exit 3).
    VerificationFailed
        The certificate is outside tolerance (exit 1); the parts and split.json
        (with ``passed: false``) are still written for inspection.
    """
    model_path = Path(model_path).absolute()
    if samples < 1:
        raise UsageError(f"--samples must be at least 1, got {samples}")
    for flag, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None and not value >= 0:  # also refuses NaN
            raise UsageError(f"{flag} must be a number >= 0, got {value}")
    name = model_stem(model_path)
    out = Path(out_dir).absolute() if out_dir is not None else model_path.parent
    asked = {"samples": samples, "atol": atol, "rtol": rtol}
    fast = _reusable_unchanged(out / f"{name}.split.json", model_path, cut, verify, asked, images)
    if fast is not None:
        return fast
    model = load_model(model_path, load_external_data=False)
    sha = file_sha256(model_path)
    make_output_dir(out)
    json_path = out / f"{name}.split.json"
    stamp = data_stamp(model, model_path)
    if images is None and json_path.exists():
        reused = _reusable(json_path, sha, cut, verify, stamp, asked)
        if reused is not None:
            return reused

    ix = GraphIndex.build(model)
    if len(ix.graph_inputs) != 1:
        raise ModelRejected(
            f"{model_path}: xnetmap splits image classifiers with exactly one input; this model "
            f"has {len(ix.graph_inputs)}: {ix.graph_inputs}"
        )
    input_name = ix.graph_inputs[0]
    plan = plan_split(ix, cut, str(model_path))
    types = ix.types
    cut_type = types.get(plan.cut_tensor, onnx.TensorProto.FLOAT)

    f_part = build_features_part(
        ix, plan.cut_tensor, plan.cut_shape, plan.feature_dim, cut_type, sha
    )
    c_part = build_classifier_part(
        ix,
        plan.cut_tensor,
        plan.cut_shape,
        plan.feature_dim,
        cut_type,
        plan.outputs,
        sha,
        plan.rewrites,
    )
    f_path, c_path = out / f"{name}.features.onnx", out / f"{name}.classifier.onnx"
    try:
        f_data = save_part(f_part, f_path, model_path)
        c_data = save_part(c_part, c_path, model_path)
    except OSError as err:
        raise _write_error(out, err) from None
    for part in (f_path, c_path):
        try:
            run_checker(part)
        except ModelRejected as err:
            raise InternalError(f"split part fails onnx.checker (a bug): {err}") from None

    certificate = None
    if verify:
        precision = _precision(model, types, input_name)
        d_atol, d_rtol = TOLERANCES[precision]
        atol = d_atol if atol is None else atol
        rtol = d_rtol if rtol is None else rtol
        dtype, dims = input_spec(model, input_name)
        if images is not None:
            X, notes = image_inputs(model_path, Path(images), samples)
            X = X.astype(dtype, copy=False)
            source = f"images from {images}"
        else:
            X, notes = random_inputs(dtype, dims, samples, spatial=_spatial_hint(model))
            source = "random normal inputs (seed 0)"
        fixed = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
        if fixed is not None and len(X) % fixed:
            # a fixed batch dim: pad with repeats of the first inputs to whole batches
            pad = fixed - len(X) % fixed
            X = np.concatenate([X, np.resize(X, (pad, *X.shape[1:]))])
            notes.append(f"input batch is fixed at {fixed}: certified {len(X)} inputs")
        batch = fixed if fixed is not None else CERT_BATCH
        certificate = certify(
            model_path,
            f_path,
            c_path,
            X,
            input_name=input_name,
            logits_name=plan.logits_name,
            output_names=plan.outputs,
            atol=atol,
            rtol=rtol,
            fixed_batch=batch,
        )
        certificate.update(inputs=source, precision=precision, notes=notes)

    record = {
        "format": SPLIT_FORMAT,
        "xnetmap_version": __version__,
        "model_path": str(model_path),
        "model_sha256": sha,
        "external_data": stamp,
        "cut": cut,
        "cut_tensor": plan.cut_tensor,
        "cut_shape": plan.cut_shape,
        "feature_dim": plan.feature_dim,
        "input_name": input_name,
        "logits_name": plan.logits_name,
        "output_names": plan.outputs,
        "dropped_outputs": plan.dropped,
        "head": plan.head.describe(ix) if plan.head is not None else None,
        "node_counts": {
            "model": len(model.graph.node),
            "features": len(f_part.graph.node),
            "classifier": len(c_part.graph.node),
        },
        "features_file": f_path.name,
        "classifier_file": c_path.name,
        "features_data_file": f_data.name if f_data else None,
        "classifier_data_file": c_data.name if c_data else None,
        "features_sha256": file_sha256(f_path),
        "classifier_sha256": file_sha256(c_path),
        "data_files": _part_data_stamps([f_data, c_data]),
        "certificate": certificate,
    }
    try:
        atomic_write_bytes(json_path, (json.dumps(record, indent=2) + "\n").encode())
    except OSError as err:
        raise _write_error(out, err) from None
    result = SplitResult(
        model_path=model_path,
        features_path=f_path,
        classifier_path=c_path,
        json_path=json_path,
        cut=cut,
        cut_tensor=plan.cut_tensor,
        feature_dim=plan.feature_dim,
        input_name=input_name,
        logits_name=plan.logits_name,
        output_names=tuple(plan.outputs),
        model_sha256=sha,
        certificate=certificate,
    )
    if certificate is not None and not certificate["passed"]:
        raise VerificationFailed(
            f"split certificate failed for {model_path}: C(F(x)) differs from the model by up to "
            f"{certificate['max_abs_diff']:.3g} (atol {certificate['atol']:g}, rtol "
            f"{certificate['rtol']:g}; details in {json_path}); loosen --atol/--rtol only if "
            "that difference is expected"
        )
    return result


def _part_data_stamps(paths: list) -> dict:
    """Size and mtime of the parts' external data files (the part sha256 covers only
    the ``.onnx``), keyed by file name; a missing file has no entry."""
    stamps = {}
    for path in paths:
        if path is None:
            continue
        try:
            st = Path(path).stat()
        except OSError:
            continue
        stamps[Path(path).name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return stamps


def _write_error(out: Path, err: OSError) -> InputError:
    return InputError(
        f"cannot write the split parts into {out} ({err.strerror or err}); free space there "
        "or choose another output folder (-o, or --split-dir for extract)"
    )


def _spatial_hint(model: onnx.ModelProto) -> tuple[int, int] | None:
    for prop in model.metadata_props:
        if prop.key == "xnetmap.preprocess":
            try:
                size = json.loads(prop.value)["size"]
                return int(size[0]), int(size[1])
            except (ValueError, KeyError, TypeError, IndexError):
                return None
    return None
