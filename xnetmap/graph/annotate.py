"""Write ``xnetmap.preprocess`` / ``xnetmap.labels`` into a model's metadata_props.

A user sets them once per exported model; every later command reads them.
The model is written atomically (temp file, fsync, rename), to a copy or in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..data.labelfiles import read_label_names
from ..data.preprocess import LABELS_KEY, PREPROCESS_KEY, PreprocessSpec
from ..errors import InputError, UsageError
from ..fsutil import atomic_write_bytes
from .load import load_model


def _uses_external_data(model) -> bool:
    import onnx

    return any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
    )


def _output_classes(model) -> int | None:
    """Static class count of the first output when it is (N, K); None otherwise."""
    if not model.graph.output:
        return None
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 2 and dims[1].HasField("dim_value") and dims[1].dim_value > 0:
        return int(dims[1].dim_value)
    return None


def annotate_model(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    preset: str | None = None,
    overrides: dict | None = None,
    labels: str | os.PathLike | list[str] | None = None,
    in_place: bool = False,
) -> dict:
    """Store preprocessing (and optionally class names) in a model's metadata.

    Parameters
    ----------
    model_path : path
        The ONNX model.
    out_path : path, optional
        Where to write the annotated copy (required unless ``in_place``).
    preset : str, optional
        One of :data:`xnetmap.data.PRESETS`; else the model's current metadata,
        else what its input shape implies.
    overrides : dict, optional
        Preprocessing fields to change (see :func:`overrides_from_strings`).
    labels : path or list of str, optional
        Class names (file: one per line) for ``xnetmap.labels``; the word
        ``"imagenet"`` means the bundled ImageNet-1k list (write ``./imagenet``
        for a file of that name).
    in_place : bool
        Overwrite ``model_path``.

    Returns
    -------
    dict
        ``path`` (written file), ``preprocess`` (dict), ``labels`` (list or None),
        ``notes`` (list of str: what was assumed).

    Raises
    ------
    UsageError
        Neither or both of ``out_path`` and ``in_place``; unknown preset.
    InputError
        Missing model, bad labels file, class count not matching the model.
    ModelRejected
        Not a valid ONNX model.
    """
    model_path = Path(model_path)
    if in_place and out_path is not None:
        raise UsageError("give either an output path (-o) or --in-place, not both")
    if not in_place and out_path is None:
        raise UsageError("give an output path (-o OUT.onnx) or --in-place to overwrite the model")
    target = model_path if in_place else Path(out_path)
    model = load_model(model_path, load_external_data=False)
    if (_uses_external_data(model) and not in_place
            and target.resolve().parent != model_path.resolve().parent):
        raise InputError(
            f"{model_path} keeps its weights in external data files; write the annotated copy "
            "into the same folder or use --in-place"
        )
    spec, notes = PreprocessSpec.from_model(model, preset=preset, overrides=overrides,
                                            name=str(model_path))
    names = _label_names(labels, model, model_path)
    entries = {PREPROCESS_KEY: spec.to_json()}
    if names is not None:
        entries[LABELS_KEY] = json.dumps(names, ensure_ascii=False)
    _set_metadata(model, entries)
    _write_model(model, target, model_path.stat().st_mode & 0o777)
    return {"path": str(target), "preprocess": spec.to_dict(), "labels": names, "notes": notes}


#: ``--labels imagenet``: the bundled ImageNet-1k class list (source and licence beside it).
IMAGENET_LABELS = "imagenet"


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k (ILSVRC2012) class names in class-index order (0 = tench).

    From torchvision's ``_IMAGENET_CATEGORIES`` (BSD-3-Clause), bundled as
    ``imagenet1k_classes.txt``; see ``imagenet1k_classes.LICENSE``.
    """
    text = (Path(__file__).with_name("imagenet1k_classes.txt")).read_text(encoding="utf-8")
    return text.splitlines()


def _label_names(labels, model, model_path: Path) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str) and labels == IMAGENET_LABELS:
        names = imagenet_class_names()
    else:
        names = list(labels) if isinstance(labels, list) else read_label_names(labels)
    k = _output_classes(model)
    if k is not None and k != len(names):
        raise InputError(
            f"labels give {len(names)} class names but {model_path}'s output "
            f"{model.graph.output[0].name!r} has {k} classes"
        )
    return names


def _set_metadata(model, entries: dict) -> None:
    """Replace ``entries``' keys in the model's metadata_props, keeping every other entry."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    for key, value in kept + list(entries.items()):
        model.metadata_props.add(key=key, value=value)


def _write_model(model, target: Path, mode: int) -> None:
    if target.is_dir():
        raise InputError(f"-o {target} is a folder; give the path of the .onnx file to write")
    try:
        atomic_write_bytes(target, model.SerializeToString())
    except OSError as err:
        raise InputError(f"cannot write {target} ({err.strerror}); choose another -o") from None
    try:  # the temp file behind the atomic write is 0600; give the model its usual mode back
        os.chmod(target, mode)  # in place: unchanged; a copy: the source's mode
    except OSError:
        pass
