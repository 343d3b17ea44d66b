"""xnetmap.data: dataset readers, image decoding, preprocessing that travels with the model.

- :func:`open_dataset` / :class:`Dataset`: ImageFolder trees, flat folders with a
  labels file, IDX (gz or raw), .npz/.npy arrays, unlabeled folders.
- :func:`decode_image` / :class:`UnreadableImage`: the one fixed decoding policy
  (see :mod:`xnetmap.data.decode`).
- :class:`PreprocessSpec`, :data:`PRESETS`, :func:`preprocess_sample`: the
  ``xnetmap.preprocess`` metadata and how it turns an image into a tensor.
"""

from __future__ import annotations

from .datasets import KINDS, Dataset, open_dataset, shared_samples
from .decode import MAX_PIXELS, UnreadableImage, decode_image
from .preprocess import (
    LABELS_KEY,
    PREPROCESS_KEY,
    PRESETS,
    PreprocessSpec,
    overrides_from_strings,
    preprocess_sample,
)

__all__ = [
    "KINDS",
    "LABELS_KEY",
    "MAX_PIXELS",
    "PREPROCESS_KEY",
    "PRESETS",
    "Dataset",
    "PreprocessSpec",
    "UnreadableImage",
    "decode_image",
    "open_dataset",
    "overrides_from_strings",
    "preprocess_sample",
    "shared_samples",
]
