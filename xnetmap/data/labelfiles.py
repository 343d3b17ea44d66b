"""Label files and class-index files.

Labels file (for flat folders, ``.npy`` arrays, or to override an IDX pairing):

- one label per line, in sorted file-name order (the ILSVRC2012 validation
  ground-truth layout);
- ``file label`` per line, whitespace-separated (caffe's ``val.txt``);
- CSV ``file,label`` (``.csv``; a header row such as ``file,label`` is skipped);
- ``.npy`` integer array (array datasets only).

A label is an integer class id (used as is: NOTE the ILSVRC2012 devkit's
``ILSVRC2012_validation_ground_truth.txt`` holds 1-based ILSVRC2012_IDs in the
devkit's own order, not torchvision's sorted-wnid indices; convert it first, or
use a file of wnids with a class-index file) or a class name (mapped through the
class-index file when given, else through the sorted unique names).

Class-index file: one class name per line (line number = class id; a line may
carry a description after the first whitespace, which is ignored for mapping:
``n01440764 tench``), two columns ``name index`` on every line (the index is the
classifier output; indices may skip outputs), or JSON: a list of names, a
``{name: index}`` object (indices may skip outputs), or torchvision's
``{"0": ["n01440764", "tench"], ...}``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import InputError

_HEADER_WORDS = {"file", "filename", "file_name", "path", "image", "img", "name", "id", "image_id"}


def read_class_index(path: str | Path) -> list[str]:
    """Class names in class-id order from a class-index file (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"class-index file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"class-index file {path} is not valid JSON: {err}") from err
        if isinstance(obj, list):
            names = [str(v) for v in obj]
        elif isinstance(obj, dict) and all(isinstance(v, int) for v in obj.values()):
            names = _names_by_index(list(obj.items()), path)
        elif isinstance(obj, dict) and all(str(k).isdigit() for k in obj):
            try:
                names = [
                    str(obj[str(i)][0] if isinstance(obj[str(i)], list) else obj[str(i)])
                    for i in range(len(obj))
                ]
            except KeyError as err:
                raise InputError(f"class-index file {path}: missing index {err}") from err
        else:
            raise InputError(
                f"class-index file {path}: expected a JSON list of names, {{name: index}} or "
                '{"0": ["wnid", "name"], ...}'
            )
    else:
        rows = [ln.split() for ln in text.splitlines() if ln.strip()]
        if rows and all(len(r) == 2 and _is_int(r[1]) for r in rows):
            names = _names_by_index([(r[0], int(r[1])) for r in rows], path)
        else:
            names = [r[0] for r in rows]
    if not names:
        raise InputError(f"class-index file {path} is empty")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise InputError(f"class-index file {path} repeats class names: {dup}")
    return names


def _names_by_index(pairs: list[tuple[str, int]], path: Path) -> list[str]:
    """Class names by output index from ``(name, index)`` pairs.

    Indices may skip outputs (a 10-class folder placed on a 1000-way classifier);
    a skipped output gets the placeholder name ``<output I>``, which no folder matches.
    """
    by_index: dict[int, str] = {}
    for name, i in pairs:
        if i < 0:
            raise InputError(f"class-index file {path}: negative index {i} for {name!r}")
        if i in by_index:
            raise InputError(
                f"class-index file {path}: index {i} given to both {by_index[i]!r} and {name!r}"
            )
        by_index[i] = name
    if not by_index:
        return []
    return [by_index.get(i, f"<output {i}>") for i in range(max(by_index) + 1)]


def read_label_names(path: str | Path) -> list[str]:
    """Class names, one per line (``xnetmap annotate --labels``); blank trailing lines dropped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"labels file {path} does not exist")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise InputError(f"labels file {path} is empty")
    if any(not ln for ln in lines):
        raise InputError(f"labels file {path} has a blank line inside; one class name per line")
    return lines


def read_labels_file(path: str | Path) -> tuple[list[str] | None, list[str]]:
    """Read a labels file.

    Returns
    -------
    files : list of str or None
        File names (relative paths) when the file pairs names with labels, else None
        (one label per line, in sorted file-name order).
    labels : list of str
        Raw label tokens, still strings.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"labels file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        if rows and rows[0][0].strip().lower() in _HEADER_WORDS:
            rows = rows[1:]
        bad = [i for i, r in enumerate(rows) if len(r) < 2]
        if bad:
            raise InputError(
                f"labels file {path}: row {bad[0] + 1} has no label; expected CSV 'file,label'"
            )
        return [r[0].strip() for r in rows], [r[1].strip() for r in rows]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    parts = [ln.split(None, 1) for ln in lines]
    if parts and all(len(p) == 2 for p in parts):
        return [p[0] for p in parts], [p[1].strip() for p in parts]
    if any(len(p) != 1 for p in parts):
        raise InputError(
            f"labels file {path}: mixes 'label' and 'file label' lines; use one layout"
        )
    return None, [p[0] for p in parts]


def encode_labels(
    tokens: list[str], class_names: list[str] | None, where: str
) -> tuple[np.ndarray, list[str] | None]:
    """Turn label tokens into int64 class ids.

    Integers are used as they are; names go through ``class_names`` when given,
    else through the sorted unique names (which then become the class names).

    Returns
    -------
    labels : ndarray of shape (n,), int64
    class_names : list of str or None
    """
    try:
        ids = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        ids = None
    if ids is None and class_names is None:
        numeric = [k for k, t in enumerate(tokens) if _is_int(t)]
        if numeric and len(numeric) < len(tokens):
            # a typo in an integer label file must not silently re-map every label
            k = next(k for k, t in enumerate(tokens) if not _is_int(t))
            raise InputError(
                f"{where}: label {tokens[k]!r} (entry {k + 1}) is not an integer but "
                f"{len(numeric):,} other labels are; use integer class ids throughout, or "
                "class names with a class-index file"
            )
    if ids is not None:
        if ids.size and ids.min() < 0:
            raise InputError(f"{where}: negative label {int(ids.min())}")
        if class_names is not None and ids.size and ids.max() >= len(class_names):
            raise InputError(
                f"{where}: label {int(ids.max())} but the class index has only "
                f"{len(class_names)} classes"
            )
        return ids, class_names
    names = class_names if class_names is not None else sorted(set(tokens))
    lookup = {n: i for i, n in enumerate(names)}
    missing = sorted({t for t in tokens if t not in lookup})
    if missing:
        raise InputError(f"{where}: labels not in the class index: {missing[:5]}")
    return np.array([lookup[t] for t in tokens], dtype=np.int64), list(names)


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True
