"""Split parts in the one cache: ``CACHE/splits/<stem>-<sha256[:16]>-<cut>/``.

One folder per (model content, cut), so alternating cuts never re-split over
each other and two models with one file name never collide. Whatever is found
there is handed to :func:`split_model`, which reuses it only after checking it
against the model (it never trusts the folder on its record alone).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..cache import SPLITS, cache_root, slug
from ..fsutil import file_sha256
from .load import load_model
from .model_info import ModelInfo
from .split import SplitResult, split_model, split_model_proto


def split_folder(model_path: str | os.PathLike, sha256: str, cut: str,
                 cache: str | os.PathLike | None = None) -> Path:
    """The cache folder of the parts of the model ``model_path`` (digest ``sha256``) at ``cut``."""
    stem = Path(model_path).name.removesuffix(".onnx")
    return cache_root(cache) / SPLITS / f"{slug(stem)}-{sha256[:16]}-{slug(cut)}"


def split_cached(model: ModelInfo | str | os.PathLike, cut: str = "pooled",
                 cache: str | os.PathLike | None = None, **options) -> SplitResult:
    """Split ``model`` at ``cut`` into the cache (or reuse the verified parts found there).

    ``options`` go to :func:`split_model` (``verify``, ``samples``, ``images``, ...).
    """
    if isinstance(model, ModelInfo):  # already read: no second parse of the file
        folder = split_folder(model.path, model.sha256, cut, cache)
        return split_model_proto(model.proto, model.path, model.sha256, folder, cut=cut,
                                 **options)
    path = Path(model)
    if not path.is_file():
        load_model(path, load_external_data=False)  # the loader's own message
    return split_model(path, split_folder(path, file_sha256(path), cut, cache), cut=cut,
                       **options)

