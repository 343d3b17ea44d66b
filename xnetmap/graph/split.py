"""``split_model``: cut a classifier into F (features) and C (classifier), certified.

Files written into ``out_dir`` (default: the model's folder), for a model
``NAME.onnx``: ``NAME.features.onnx``, ``NAME.classifier.onnx`` (plus
``.data`` files when the source keeps weights as external data) and
``NAME.split.json``.

Nothing found on disk is trusted on its record alone: the model is split
afresh every time (graph surgery is cheap and deterministic) and a part on disk
is reused only when it is byte-identical to the fresh one, its data file
included; otherwise it is written again. A recorded certificate is reused only
for byte-identical parts of the same model, cut and certificate settings. An
output path that is also a file the model reads (its external data) is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from .. import __version__
from ..errors import InputError, InternalError, ModelRejected, UsageError, VerificationFailed
from ..fsutil import atomic_write_bytes, file_sha256, make_output_dir
from .external_data import ExternalRef, validate_external_data
from .index import GraphIndex
from .load import check_versions, load_model, run_checker
from .plan import SplitPlan, plan_split
from .save import DataLayout, data_matches, relocate_external, same_bytes, write_part
from .split_certificate import CertificateRequest, run_certificate
from .surgery import classifier_part, features_part

SPLIT_FORMAT = 1


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


@dataclass(frozen=True)
class SplitFiles:
    """The files a split of model ``NAME`` writes into one folder."""

    features: Path
    classifier: Path
    json_path: Path

    @classmethod
    def in_folder(cls, folder: Path, name: str) -> SplitFiles:
        return cls(
            folder / f"{name}.features.onnx",
            folder / f"{name}.classifier.onnx",
            folder / f"{name}.split.json",
        )

    @property
    def features_data(self) -> Path:
        return self.features.with_name(self.features.name + ".data")

    @property
    def classifier_data(self) -> Path:
        return self.classifier.with_name(self.classifier.name + ".data")

    def all(self) -> tuple[Path, ...]:
        return (
            self.features,
            self.features_data,
            self.classifier,
            self.classifier_data,
            self.json_path,
        )


@dataclass(frozen=True)
class _Parts:
    """F and C made in memory: their protos, final bytes and data file layouts."""

    features: onnx.ModelProto
    classifier: onnx.ModelProto
    features_bytes: bytes
    classifier_bytes: bytes
    features_layout: DataLayout | None
    classifier_layout: DataLayout | None

    def digests(self) -> tuple[str, str]:
        return (
            hashlib.sha256(self.features_bytes).hexdigest(),
            hashlib.sha256(self.classifier_bytes).hexdigest(),
        )


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # also case-insensitive file systems, bind mounts
    except OSError:
        return False


def refuse_collisions(files: SplitFiles, model_path: Path, refs: list[ExternalRef]) -> None:
    """Refuse (UsageError, exit 2) to write any split file over a file the model reads."""
    read = [(model_path, "the model file itself")]
    read += [(ref.path, f"external data of tensor {ref.tensor_name!r}") for ref in refs]
    for out in files.all():
        for path, what in read:
            if _same_file(out, path):
                raise UsageError(
                    f"refusing to write {out}: the model {model_path} reads that file ({what}); "
                    "xnetmap never writes where a model reads: choose another output folder "
                    "(-o, or --split-dir for extract)"
                )


def _check_settings(samples: int, atol: float | None, rtol: float | None) -> None:
    if samples < 1:
        raise UsageError(f"--samples must be at least 1, got {samples}")
    for flag, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None and not value >= 0:  # also refuses NaN
            raise UsageError(f"{flag} must be a number >= 0, got {value}")


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

    Path-level twin of :func:`split_model_proto`: loads the model with
    :func:`load_model` (one parse, no external weights read) and hashes the file.

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
        Missing model, bad ``cut`` name, a cut that does not separate the graph, or
        an output path the model reads (exit 2).
    ModelRejected
        Unsafe/invalid model or no detectable head (exit 3).
    VerificationFailed
        The certificate is outside tolerance (exit 1); the parts and split.json
        (with ``passed: false``) are still written for inspection.
    """
    _check_settings(samples, atol, rtol)
    model_path = Path(model_path).absolute()
    model = load_model(model_path, load_external_data=False)
    return split_model_proto(
        model,
        model_path,
        file_sha256(model_path),
        out_dir,
        cut=cut,
        verify=verify,
        samples=samples,
        images=images,
        atol=atol,
        rtol=rtol,
    )


def split_model_proto(
    model: onnx.ModelProto,
    model_path: str | Path,
    sha256: str,
    out_dir: str | Path | None = None,
    *,
    cut: str = "pooled",
    verify: bool = True,
    samples: int = 8,
    images: str | Path | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    index: GraphIndex | None = None,
) -> SplitResult:
    """Split an already-loaded model; nothing parses the model file again.

    ``model`` must come from :func:`load_model` (``load_external_data=False``) on
    ``model_path``, whose ``.onnx`` file has sha256 ``sha256``; ``index`` is its
    :class:`GraphIndex` when the caller already built one. The model is not
    modified. Other parameters, result and errors as :func:`split_model`.
    """
    _check_settings(samples, atol, rtol)
    model_path = Path(model_path).absolute()
    out = Path(out_dir).absolute() if out_dir is not None else model_path.parent
    files = SplitFiles.in_folder(out, model_stem(model_path))
    refuse_collisions(files, model_path, validate_external_data(model, model_path))
    make_output_dir(out)
    ix = index if index is not None else GraphIndex.build(model)
    if len(ix.graph_inputs) != 1:
        raise ModelRejected(
            f"{model_path}: xnetmap splits image classifiers with exactly one input; this model "
            f"has {len(ix.graph_inputs)}: {ix.graph_inputs}"
        )
    plan = plan_split(ix, cut, str(model_path))
    parts = _make_parts(model, model_path, sha256, plan, files)
    on_disk = _parts_on_disk(parts, files)
    if not on_disk:
        _write_parts(parts, files)
    _check_parts(parts, files)
    request = CertificateRequest(verify, samples, images, atol, rtol)
    record = _reusable_record(files.json_path, sha256, cut, parts, request) if on_disk else None
    if record is None:
        certificate = None
        if verify:
            certificate = run_certificate(
                model,
                model_path,
                (files.features, files.classifier),
                input_name=ix.graph_inputs[0],
                logits_name=plan.logits_name,
                output_names=plan.outputs,
                request=request,
                types=ix.types,
            )
        record = _record(model, model_path, sha256, cut, ix, plan, files, parts, certificate)
        try:
            atomic_write_bytes(files.json_path, (json.dumps(record, indent=2) + "\n").encode())
        except OSError as err:
            raise _write_error(out, err) from None
    return _result(model_path, files, record)


def _make_parts(
    model: onnx.ModelProto, model_path: Path, sha256: str, plan: SplitPlan, files: SplitFiles
) -> _Parts:
    f_part = features_part(
        model, plan.cut_tensor, len(plan.cut_shape), plan.feature_dim, plan.cut_type, sha256
    )
    c_part = classifier_part(
        model,
        plan.cut_tensor,
        plan.cut_shape,
        plan.feature_dim,
        plan.cut_type,
        plan.outputs,
        sha256,
        plan.rewrites,
    )
    f_layout = relocate_external(f_part, model_path, files.features_data)
    c_layout = relocate_external(c_part, model_path, files.classifier_data)
    return _Parts(
        f_part,
        c_part,
        f_part.SerializeToString(deterministic=True),
        c_part.SerializeToString(deterministic=True),
        f_layout,
        c_layout,
    )


def _parts_on_disk(parts: _Parts, files: SplitFiles) -> bool:
    """Whether both parts (and their data files) on disk are exactly the fresh ones."""
    return all(
        same_bytes(path, data) and (layout is None or data_matches(layout))
        for path, data, layout in (
            (files.features, parts.features_bytes, parts.features_layout),
            (files.classifier, parts.classifier_bytes, parts.classifier_layout),
        )
    )


def _write_parts(parts: _Parts, files: SplitFiles) -> None:
    try:
        write_part(parts.features_bytes, files.features, parts.features_layout)
        write_part(parts.classifier_bytes, files.classifier, parts.classifier_layout)
    except OSError as err:
        raise _write_error(files.features.parent, err) from None


def _check_parts(parts: _Parts, files: SplitFiles) -> None:
    """The loader's checks on each part as it lies on disk, before onnxruntime sees it:
    versions and operator domains, external data inside the folder, onnx.checker."""
    for proto, path in ((parts.features, files.features), (parts.classifier, files.classifier)):
        try:
            check_versions(proto, path)
            validate_external_data(proto, path)
            run_checker(path)
        except ModelRejected as err:
            raise InternalError(f"split part fails the loader's checks (a bug): {err}") from None


def _reusable_record(
    json_path: Path, sha256: str, cut: str, parts: _Parts, request: CertificateRequest
) -> dict | None:
    """The recorded split when it describes exactly these parts and its certificate
    answers this request; a certificate made with other settings is made again."""
    if request.images is not None:
        return None  # certify on the images asked for
    try:
        record = json.loads(json_path.read_text())
        f_sha, c_sha = parts.digests()
        if record.get("format") != SPLIT_FORMAT or record.get("model_sha256") != sha256:
            return None
        if record.get("cut") != cut or record.get("features_sha256") != f_sha:
            return None
        if record.get("classifier_sha256") != c_sha:
            return None
        if not request.accepts(record.get("certificate")):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return record


def _record(
    model: onnx.ModelProto,
    model_path: Path,
    sha256: str,
    cut: str,
    ix: GraphIndex,
    plan: SplitPlan,
    files: SplitFiles,
    parts: _Parts,
    certificate: dict | None,
) -> dict:
    f_sha, c_sha = parts.digests()
    data = [files.features_data if parts.features_layout else None]
    data.append(files.classifier_data if parts.classifier_layout else None)
    return {
        "format": SPLIT_FORMAT,
        "xnetmap_version": __version__,
        "model_path": str(model_path),
        "model_sha256": sha256,
        "external_data": data_stamp(model, model_path),
        "cut": cut,
        "cut_tensor": plan.cut_tensor,
        "cut_shape": plan.cut_shape,
        "feature_dim": plan.feature_dim,
        "input_name": ix.graph_inputs[0],
        "logits_name": plan.logits_name,
        "output_names": plan.outputs,
        "dropped_outputs": plan.dropped,
        "head": plan.head.describe(ix) if plan.head is not None else None,
        "node_counts": {
            "model": len(model.graph.node),
            "features": len(parts.features.graph.node),
            "classifier": len(parts.classifier.graph.node),
        },
        "features_file": files.features.name,
        "classifier_file": files.classifier.name,
        "features_data_file": data[0].name if data[0] else None,
        "classifier_data_file": data[1].name if data[1] else None,
        "features_sha256": f_sha,
        "classifier_sha256": c_sha,
        "data_files": _part_data_stamps(data),
        "certificate": certificate,
    }


def _result(model_path: Path, files: SplitFiles, record: dict) -> SplitResult:
    result = SplitResult(
        model_path=model_path,
        features_path=files.features,
        classifier_path=files.classifier,
        json_path=files.json_path,
        cut=record["cut"],
        cut_tensor=record["cut_tensor"],
        feature_dim=int(record["feature_dim"]),
        input_name=record["input_name"],
        logits_name=record["logits_name"],
        output_names=tuple(record["output_names"]),
        model_sha256=record["model_sha256"],
        certificate=record["certificate"],
    )
    certificate = record["certificate"]
    if certificate is not None and not certificate["passed"]:
        raise VerificationFailed(
            f"split certificate failed for {model_path}: C(F(x)) differs from the model by up to "
            f"{certificate['max_abs_diff']:.3g} (atol {certificate['atol']:g}, rtol "
            f"{certificate['rtol']:g}; details in {files.json_path}); loosen --atol/--rtol only "
            "if that difference is expected"
        )
    return result


def data_stamp(model: onnx.ModelProto, model_path: Path) -> list[dict]:
    """Name, size and mtime of each external data file of the source model (recorded
    in split.json for the reader; reuse compares the parts' bytes, not these)."""
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


def _part_data_stamps(paths: list) -> dict:
    """Size and mtime of the parts' external data files, keyed by file name."""
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
