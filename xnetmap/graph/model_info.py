"""``ModelInfo``: a model read once per run, and everything the stages need from it.

Every stage of a study (split, extract, classifiers, labels) takes a
:class:`ModelInfo` instead of re-reading the model file: it is parsed once by
the safe loader (:func:`xnetmap.graph.load_model`, without external weights),
hashed once, and its preprocessing and label metadata are read from that parse.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.preprocess import LABELS_KEY, PreprocessSpec, check_spec_fits
from ..errors import InputError
from ..fsutil import file_sha256
from .load import load_model


@dataclass(frozen=True)
class ModelInfo:
    """One ONNX classifier as xnetmap sees it.

    Attributes
    ----------
    path : Path
        The model file.
    sha256 : str
        Digest of the ``.onnx`` file.
    proto : onnx.ModelProto
        The parsed graph (external weights not loaded).
    preprocess : PreprocessSpec
        From the model's ``xnetmap.preprocess`` metadata, a preset, or the input shape.
    preprocess_notes : tuple of str
        What was assumed or adapted to get ``preprocess`` (for the user to read).
    labels : tuple of str or None
        The model's ``xnetmap.labels`` (class names, index = output), if any.
    """

    path: Path
    sha256: str
    proto: Any = field(repr=False, compare=False)
    preprocess: PreprocessSpec
    preprocess_notes: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None

    @property
    def stem(self) -> str:
        """The file name without ``.onnx``."""
        return self.path.name.removesuffix(".onnx")

    @functools.cached_property
    def output_width(self) -> int | None:
        """Static width of the first output (the class count of a classifier), if known."""
        outs = self.proto.graph.output
        if not outs:
            return None
        dims = outs[0].type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[-1].HasField("dim_value") and dims[-1].dim_value > 0:
            return int(dims[-1].dim_value)
        return None


def read_labels(model, where: str) -> tuple[str, ...] | None:
    """The ``xnetmap.labels`` metadata of a loaded model, or None when it has none."""
    for prop in model.metadata_props:
        if prop.key == LABELS_KEY:
            try:
                labels = json.loads(prop.value)
            except ValueError as err:
                raise InputError(
                    f"{where}: metadata {LABELS_KEY} is not JSON ({err}); "
                    "fix it with `xnetmap annotate --labels`"
                ) from err
            if not isinstance(labels, list):
                raise InputError(
                    f"{where}: metadata {LABELS_KEY} must be a JSON list of class names; "
                    "fix it with `xnetmap annotate --labels`"
                )
            return tuple(str(x) for x in labels)
    return None


def read_model(path: str | os.PathLike, *, preset: str | None = None,
               overrides: dict | None = None, preprocess: PreprocessSpec | None = None
               ) -> ModelInfo:
    """Read ``path`` once through the safe loader and gather what every stage needs.

    Parameters
    ----------
    path : path
        An ONNX classifier (or any part: F, C, a stitched model).
    preset, overrides : optional
        Preprocessing preset and field overrides (see
        :meth:`xnetmap.data.PreprocessSpec.from_model`).
    preprocess : PreprocessSpec, optional
        Use this spec as it is (it still must fit the model's input).

    Returns
    -------
    ModelInfo
    """
    path = Path(path)
    proto = load_model(path, load_external_data=False)
    if preprocess is not None:
        check_spec_fits(preprocess, proto, str(path))
        spec, notes = preprocess, []
    else:
        spec, notes = PreprocessSpec.from_model(proto, preset=preset, overrides=overrides,
                                                name=str(path))
    return ModelInfo(
        path=path,
        sha256=file_sha256(path),
        proto=proto,
        preprocess=spec,
        preprocess_notes=tuple(notes),
        labels=read_labels(proto, str(path)),
    )


def model_preprocess(path: str | os.PathLike, preset: str | None = None,
                     overrides: dict | None = None,
                     proto: Any = None) -> tuple[PreprocessSpec, list[str]]:
    """Path-level twin of :meth:`PreprocessSpec.from_model`: the spec for a model file
    (``proto``: that file already loaded, so it is not parsed again)."""
    if proto is None:
        proto = load_model(Path(path), load_external_data=False)
    return PreprocessSpec.from_model(proto, preset=preset, overrides=overrides, name=str(path))
