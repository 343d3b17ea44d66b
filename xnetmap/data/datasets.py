"""Datasets: the layouts users actually have, behind one small interface.

``open_dataset(spec)`` takes a path (kind detected) or ``kind:path`` with kind in

- ``folder``: ImageFolder tree, one sub-folder per class (sorted folder names ->
  class ids, or an explicit class-index file), images found recursively;
- ``flat``: a folder of images plus a labels file (one label per line in sorted
  file-name order, ``file label`` lines, or CSV ``file,label``); the spec may
  also be the labels file itself (files relative to its folder);
- ``idx``: an IDX images file (gz or raw) with its labels file found beside it,
  or a folder holding exactly one IDX images file;
- ``npz`` / ``npy``: uint8 arrays N x H x W or N x H x W x C (N x C x H x W is
  transposed); in an npz the images are under ``images``/``x``/``X``/``data``
  (or the only 3-/4-D uint8 array) and labels under ``labels``/``y``/``Y``/``targets``;
- ``unlabeled``: every image under a folder, recursively, no labels.

Detection of a bare path: ``.npz``/``.npy`` by suffix; ``*idxN-ubyte[.gz]`` is
idx; ``.csv``/``.txt`` is flat (labels file); a folder is flat when ``labels``
is given or it holds ``labels.csv``/``labels.txt`` next to its images, folder
when it holds only sub-folders, idx when it holds only IDX files, else unlabeled.

Sample ids are relative POSIX paths for file datasets and ``NAME#INDEX`` for
array datasets: unique, and the same for the same dataset. Fingerprints: paths
+ sizes + mtimes for files (one ``stat`` per file, cheap for 1.3 M files);
a SHA-256 of the content for array files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import idx as idxmod
from .decode import CONVERSIONS_KEY, UnreadableImage, decode_image, image_from_array
from .labelfiles import encode_labels, read_class_index, read_labels_file

KINDS = ("folder", "flat", "idx", "npz", "npy", "unlabeled")
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm"}
)
_LABEL_FILE_NAMES = ("labels.csv", "labels.txt")
_IMAGE_KEYS = ("images", "x", "X", "data", "imgs")
_LABEL_KEYS = ("labels", "y", "Y", "targets", "label")


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _list_images(root: Path, prefix: str = "") -> list[str]:
    """Relative POSIX paths of image files under ``root``, recursive, sorted."""
    out: list[str] = []
    stack = [(root, prefix)]
    while stack:
        folder, pre = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as err:
            raise InputError(f"cannot list folder {folder}: {err}") from err
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                stack.append((Path(e.path), f"{pre}{e.name}/"))
            elif _is_image_name(e.name):
                out.append(pre + e.name)
    out.sort()
    return out


def _sha256_file(path: Path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h


class _FileSource:
    """Images as files under a root folder."""

    def __init__(self, root: Path, relpaths: list[str]):
        self.root = root
        self.relpaths = relpaths

    def __len__(self) -> int:
        return len(self.relpaths)

    def ids(self) -> list[str]:
        return list(self.relpaths)

    def load(self, j: int):
        return decode_image(self.root / self.relpaths[j])

    def path(self, j: int) -> Path:
        return self.root / self.relpaths[j]

    def fingerprint(self, h) -> None:
        stats = []
        for rel in self.relpaths:
            try:
                st = os.stat(self.root / rel)
                h.update(_fs_bytes(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n"))
                stats.append((st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns))
            except OSError:
                h.update(_fs_bytes(f"{rel}\0missing\n"))
                stats.append((-1, 0, 0, 0))
        self._stats = stats  # kept for content digests: sizes pick which files to hash

    def sizes(self) -> np.ndarray:
        """Byte size of every file (-1: missing), from the fingerprint's ``stat`` pass."""
        if getattr(self, "_stats", None) is None:
            self.fingerprint(hashlib.sha256())
        return np.array([s[0] for s in self._stats], dtype=np.int64)

    def digests(self, wanted: np.ndarray, memo: dict, limit: int | None = None) -> list:
        """Content digest of the files at source indices ``wanted`` (of their first ``limit``
        bytes when given); a file shared by both datasets is read once per ``memo``."""
        out = []
        for j in wanted:
            key = (*self._stats[int(j)][1:], limit)
            if key not in memo:
                memo[key] = _content_digest(self.root / self.relpaths[int(j)], limit)
            out.append(memo[key])
        return out


def _content_digest(path: Path, limit: int | None = None) -> bytes | None:
    """BLAKE2b-128 of a file's bytes, or of its first ``limit`` bytes (None when it cannot
    be read: never equal to another)."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            if limit is not None:
                h.update(fh.read(limit))
                return h.digest()
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.digest()


def _fs_bytes(text: str) -> bytes:
    """UTF-8 bytes of a file name, keeping undecodable bytes (Python's surrogate escapes)."""
    return text.encode("utf-8", "surrogateescape")


class _ArraySource:
    """Images as rows of a uint8 array (N, H, W) or (N, H, W, C)."""

    def __init__(self, array: np.ndarray, name: str, files: list[Path]):
        self.array = array
        self.name = name
        self.files = files

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def ids(self) -> list[str]:
        return [f"{self.name}#{j}" for j in range(len(self))]

    def load(self, j: int):
        return image_from_array(self.array[j], f"{self.name}[{j}]")

    def fingerprint(self, h) -> None:
        for f in self.files:
            h.update(_fs_bytes(f.name) + b"\0")
            _sha256_file(f, h)

    def sizes(self) -> np.ndarray:
        """Byte size of every image row (all equal)."""
        return np.full(len(self), int(np.prod(self.array.shape[1:])), dtype=np.int64)

    def digests(self, wanted: np.ndarray, memo: dict, limit: int | None = None) -> list:
        """Content digest of the rows at ``wanted`` (pixels and shape; rows are small)."""
        shape = str(self.array.shape[1:]).encode()
        return [hashlib.blake2b(np.ascontiguousarray(self.array[int(j)]).tobytes() + shape,
                                digest_size=16).digest() for j in wanted]


class Dataset:
    """A sequence of images with optional integer labels.

    Attributes
    ----------
    kind : str
        One of ``folder, flat, idx, npz, npy, unlabeled``.
    ids : list of str
        Unique, stable sample ids (relative paths or ``NAME#INDEX``).
    labels : ndarray of shape (n,), int64, or None
        Class ids, None for unlabeled data.
    class_names : list of str or None
        Names for class ids when known.
    class_index : str or None
        The class-index file that numbered the classes (ids are then classifier outputs).
    conversions : dict of int to tuple of str
        Samples whose decoding changed them (EXIF rotation, mode conversion), filled by
        :meth:`load`; :meth:`conversion_counts` sums them.
    """

    def __init__(self, kind, source, labels, class_names, location, *, index=None, notes=(),
                 class_index=None):
        self.kind = kind
        self._source = source
        self._index = None if index is None else np.asarray(index, dtype=np.int64)
        all_ids = source.ids()
        self.ids = all_ids if self._index is None else [all_ids[j] for j in self._index]
        self.labels = labels
        self.class_names = class_names
        self.location = location
        self.notes = list(notes)
        self.class_index = class_index  # the class-index file that numbered the classes, if any
        self.conversions: dict[int, tuple] = {}  # sample -> what decoding changed (see load)
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"<Dataset {self.describe()}>"

    def _j(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for a dataset of {n}")
        i = i % n
        return i if self._index is None else int(self._index[i])

    def load(self, i: int):
        """Decode sample ``i`` per :mod:`xnetmap.data.decode`'s policy.

        Returns
        -------
        PIL.Image.Image
            Mode ``"L"`` or ``"RGB"``.

        Raises
        ------
        UnreadableImage
            The sample cannot be decoded (never substituted).
        """
        img = self._source.load(self._j(int(i)))
        done = img.info.get(CONVERSIONS_KEY)
        if done:
            self.conversions[int(i) % len(self)] = done
        return img

    def conversion_counts(self, start: int = 0, stop: int | None = None) -> dict[str, int]:
        """How many samples in ``[start, stop)`` each decoding change touched (so far loaded).

        Keys: ``"EXIF rotation applied"``, ``"CMYK -> RGB"``, ``"P -> RGB"``, ``"I;16 -> L"``...
        """
        stop = len(self) if stop is None else stop
        counts: dict[str, int] = {}
        for i, done in list(self.conversions.items()):
            if start <= i < stop:
                for what in done:
                    counts[what] = counts.get(what, 0) + 1
        return dict(sorted(counts.items()))

    def subset(self, indices) -> Dataset:
        """A dataset of the samples at ``indices`` (ids and labels follow)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"subset indices out of range for a dataset of {n}")
        idx = idx % n if n else idx
        base = idx if self._index is None else self._index[idx]
        labels = None if self.labels is None else self.labels[idx]
        return Dataset(self.kind, self._source, labels, self.class_names, self.location,
                       index=base, notes=self.notes, class_index=self.class_index)

    def fingerprint(self) -> str:
        """Hex SHA-256 identifying this dataset's content, labels, class names and selection."""
        if self._fingerprint is None:
            h = hashlib.sha256(f"xnetmap-dataset-v1\0{self.kind}\n".encode())
            self._source.fingerprint(h)
            h.update(b"labels\0")
            if self.labels is not None:
                h.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
            h.update(_fs_bytes("\n".join(self.class_names or []) + "\0"))
            if self._index is not None:
                h.update(b"index\0" + np.ascontiguousarray(self._index, dtype="<i8").tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _selected(self) -> np.ndarray:
        return np.arange(len(self._source)) if self._index is None else self._index

    def sample_sizes(self) -> np.ndarray:
        """Byte size of each sample's content (file size, or raw pixel bytes of an array row).

        File sizes come from the fingerprint's ``stat`` pass (taken here if not yet).
        """
        self.fingerprint()
        return self._source.sizes()[self._selected()]

    def describe(self) -> str:
        """One line: kind, location, size, labels."""
        n = len(self)
        text = f"{self.kind} dataset {self.location}: {n:,} image{'s' * (n != 1)}"
        if self._index is not None:
            text += f" (subset of {len(self._source):,})"
        if self.labels is None:
            text += ", unlabeled"
        else:
            k = len(self.class_names) if self.class_names else (
                int(self.labels.max()) + 1 if n else 0)
            text += f", labelled, {k} classes"
        if self.notes:
            text += " (" + "; ".join(self.notes) + ")"
        return text


def shared_samples(train: Dataset, val: Dataset) -> tuple[int, list[str]]:
    """How many ``val`` samples have the same content (bytes) as some ``train`` sample.

    Sizes come from the fingerprint's ``stat`` pass; only samples whose size occurs
    on both sides are read: first their first 4 KiB, then, where those match too, the
    whole file (BLAKE2b), each file once whichever dataset lists it. The same file,
    the same folder and byte-identical copies all count.

    Returns
    -------
    count : int
    examples : list of str
        Up to five val sample ids that also occur in train.
    """
    sa, sb = train.sample_sizes(), val.sample_sizes()
    common = np.intersect1d(sa[sa >= 0], sb[sb >= 0])
    if not common.size:
        return 0, []
    memo: dict = {}
    ia = np.flatnonzero(np.isin(sa, common))
    ib = np.flatnonzero(np.isin(sb, common))
    for limit in (4096, None):  # a cheap prefix pass, then whole files where prefixes match
        ka = train._source.digests(train._selected()[ia], memo, limit)
        kb = val._source.digests(val._selected()[ib], memo, limit)
        both = ({d for d in ka if d is not None}
                & {d for d in kb if d is not None})
        ia = np.array([i for i, d in zip(ia, ka) if d in both], dtype=np.int64)
        ib = np.array([i for i, d in zip(ib, kb) if d in both], dtype=np.int64)
    hits = [int(i) for i in ib]
    return len(hits), [val.ids[i] for i in hits[:5]]


# --------------------------------------------------------------------------- readers


def _open_folder(root: Path, class_index: Path | None) -> Dataset:
    if not root.is_dir():
        raise InputError(f"ImageFolder {root} is not a folder")
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if class_index is not None:
        names = read_class_index(class_index)
        unknown = [f for f in folders if f not in set(names)]
        if unknown:
            raise InputError(
                f"ImageFolder {root}: folders not in class-index file {class_index}: {unknown[:5]}"
            )
    else:
        names = folders
    if not folders:
        raise InputError(f"ImageFolder {root} has no class sub-folders")
    lookup = {n: i for i, n in enumerate(names)}
    rels: list[str] = []
    labels: list[int] = []
    for f in folders:
        files = _list_images(root / f, f"{f}/")
        rels.extend(files)
        labels.extend([lookup[f]] * len(files))
    if not rels:
        raise InputError(f"ImageFolder {root} has no image files in its class folders")
    return Dataset("folder", _FileSource(root, rels), np.array(labels, dtype=np.int64), names,
                   str(root))


def _open_flat(path: Path, labels: Path | None, class_index: Path | None) -> Dataset:
    if path.is_file():  # the spec is the labels file itself
        labels, root = path, path.parent
    else:
        root = path
        if labels is None:
            found = [root / n for n in _LABEL_FILE_NAMES if (root / n).is_file()]
            if not found:
                raise InputError(
                    f"flat dataset {root}: no labels file given (pass one, or put labels.csv "
                    "or labels.txt in the folder)"
                )
            labels = found[0]
    if not root.is_dir():
        raise InputError(f"flat dataset {root} is not a folder")
    names = read_class_index(class_index) if class_index is not None else None
    files, tokens = read_labels_file(labels)
    where = f"labels file {labels}"
    if files is None:
        rels = sorted(e.name for e in os.scandir(root) if e.is_file() and _is_image_name(e.name))
        if len(rels) != len(tokens):
            raise InputError(
                f"{where} has {len(tokens):,} labels but {root} has {len(rels):,} image files; "
                "one label per line in sorted file-name order is expected"
            )
        y, names = encode_labels(tokens, names, where)
    else:
        order = sorted(range(len(files)), key=lambda k: files[k])
        rels = [files[k].replace("\\", "/") for k in order]
        if len(set(rels)) != len(rels):
            raise InputError(f"{where} lists a file more than once")
        missing = [r for r in rels if not (root / r).is_file()]
        if missing:
            raise InputError(
                f"{where} lists {len(missing):,} files missing under {root}: {missing[:3]}"
            )
        y, names = encode_labels([tokens[k] for k in order], names, where)
    if not rels:
        raise InputError(f"flat dataset {root} has no images")
    return Dataset("flat", _FileSource(root, rels), y, names, str(root),
                   notes=[f"labels from {labels.name}"])


def _open_unlabeled(root: Path) -> Dataset:
    if not root.is_dir():
        raise InputError(f"unlabeled dataset {root} is not a folder")
    rels = _list_images(root)
    if not rels:
        raise InputError(f"unlabeled dataset {root} has no image files")
    return Dataset("unlabeled", _FileSource(root, rels), None, None, str(root))


def _normalise_array(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype != np.uint8:
        raise InputError(
            f"{where}: images must be uint8 (0..255), got {a.dtype}; convert with "
            "np.clip(x * 255, 0, 255).astype(np.uint8) or similar"
        )
    if a.ndim == 4 and a.shape[1] in (1, 3) and a.shape[3] not in (1, 3, 4):
        a = a.transpose(0, 2, 3, 1)  # N, C, H, W -> N, H, W, C
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[3] not in (1, 3, 4)):
        raise InputError(
            f"{where}: images must be N x H x W or N x H x W x C (C in 1, 3, 4), got {a.shape}"
        )
    return a


def _labels_from_path(path: Path, n: int, class_index: Path | None):
    names = read_class_index(class_index) if class_index is not None else None
    if path.suffix.lower() == ".npy":
        y = np.load(path, allow_pickle=False)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise InputError(
                f"labels {path}: expected a 1-D integer array, got {y.dtype} {y.shape}"
            )
        y, names = encode_labels([str(v) for v in y.tolist()], names, f"labels {path}")
    elif idxmod.is_idx_name(path.name):
        y = idxmod.read_idx(path, mmap=False).astype(np.int64).reshape(-1)
        y, names = encode_labels([str(v) for v in y.tolist()], names, f"labels {path}")
    else:
        files, tokens = read_labels_file(path)
        if files is not None:
            raise InputError(f"labels {path}: array datasets take one label per line, not files")
        y, names = encode_labels(tokens, names, f"labels {path}")
    if len(y) != n:
        raise InputError(f"labels {path} has {len(y):,} labels for {n:,} images")
    return y, names


def _check_labels(y: np.ndarray, n: int, names, where: str):
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{where}: labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(y) != n:
        raise InputError(f"{where}: {len(y):,} labels for {n:,} images")
    return encode_labels([str(v) for v in y.tolist()], names, where)


def _open_idx(path: Path, labels: Path | None, class_index: Path | None) -> Dataset:
    if path.is_dir():
        found = idxmod.find_images_files(path)
        if len(found) != 1:
            raise InputError(
                f"IDX folder {path} holds {len(found)} images files "
                f"({', '.join(p.name for p in found) or 'none'}); name one, e.g. "
                f"idx:{path / 't10k-images-idx3-ubyte.gz'}"
            )
        path = found[0]
    arr = _normalise_array(idxmod.read_idx(path), f"IDX file {path}")
    files = [path]
    notes = []
    names = read_class_index(class_index) if class_index is not None else None
    lab_path = labels or idxmod.labels_path_for(path)
    if lab_path is not None:
        y, names = _labels_from_path(lab_path, len(arr), class_index)
        files.append(lab_path)
        notes.append(f"labels from {lab_path.name}")
    else:
        y = None
        notes.append("no labels file beside it")
    return Dataset("idx", _ArraySource(arr, path.name, files), y, names, str(path), notes=notes)


def _open_npy(path: Path, labels: Path | None, class_index: Path | None) -> Dataset:
    if not path.is_file():
        raise InputError(f"array file {path} does not exist")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise InputError(f"cannot read {path} as .npy: {err}") from err
    arr = _normalise_array(arr, str(path))
    files = [path]
    y, names = None, read_class_index(class_index) if class_index is not None else None
    if labels is not None:
        y, names = _labels_from_path(labels, len(arr), class_index)
        files.append(labels)
    return Dataset("npy", _ArraySource(arr, path.name, files), y, names, str(path))


def _open_npz(path: Path, labels: Path | None, class_index: Path | None) -> Dataset:
    if not path.is_file():
        raise InputError(f"array file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError) as err:
        raise InputError(f"cannot read {path} as .npz: {err}") from err
    key = next((k for k in _IMAGE_KEYS if k in data), None)
    if key is None:
        cands = [k for k, v in data.items() if v.dtype == np.uint8 and v.ndim in (3, 4)]
        if len(cands) != 1:
            raise InputError(
                f"{path}: cannot tell which array holds the images (keys {sorted(data)}); "
                f"name it one of {list(_IMAGE_KEYS)}"
            )
        key = cands[0]
    arr = _normalise_array(data[key], f"{path}[{key}]")
    names = read_class_index(class_index) if class_index is not None else None
    if names is None and "class_names" in data:
        names = [str(s) for s in data["class_names"].tolist()]
    files = [path]
    if labels is not None:
        y, names = _labels_from_path(labels, len(arr), class_index)
        files.append(labels)
    else:
        lkey = next((k for k in _LABEL_KEYS if k in data), None)
        y = None
        if lkey is not None:
            y, names = _check_labels(data[lkey], len(arr), names, f"{path}[{lkey}]")
    return Dataset("npz", _ArraySource(arr, f"{path.name}:{key}", files), y, names, str(path))


def _detect_kind(path: Path, labels: Path | None) -> str:
    if not path.exists():
        raise InputError(f"dataset {path} does not exist")
    if path.is_file():
        name = path.name.lower()
        if name.endswith(".npz"):
            return "npz"
        if name.endswith(".npy"):
            return "npy"
        if idxmod.is_idx_name(name):
            return "idx"
        if name.endswith((".csv", ".txt")):
            return "flat"
        raise InputError(
            f"cannot tell what kind of dataset {path} is; use KIND:PATH with KIND one of "
            f"{', '.join(KINDS)}"
        )
    if labels is not None:
        return "flat"
    entries = [e for e in os.scandir(path) if not e.name.startswith(".")]
    has_images = any(e.is_file() and _is_image_name(e.name) for e in entries)
    has_dirs = any(e.is_dir() for e in entries)
    if has_images and any(e.name in _LABEL_FILE_NAMES for e in entries):
        return "flat"
    if has_dirs and not has_images:
        return "folder"
    if not has_images and any(e.is_file() and idxmod.is_idx_name(e.name) for e in entries):
        return "idx"
    return "unlabeled"


def open_dataset(
    spec: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    class_index: str | os.PathLike | None = None,
) -> Dataset:
    """Open a dataset from a path (kind detected) or ``kind:path``.

    Parameters
    ----------
    spec : str or PathLike
        ``PATH`` or ``KIND:PATH``, KIND in ``folder, flat, idx, npz, npy, unlabeled``.
    labels : path, optional
        Labels file (flat folders, npy arrays; overrides an IDX pairing or npz labels).
    class_index : path, optional
        Class-index file: class names in id order (see :mod:`xnetmap.data.labelfiles`).

    Returns
    -------
    Dataset

    Raises
    ------
    InputError
        Missing path, unknown kind, a malformed dataset (the message names the
        file), or a dataset with no samples.
    """
    text = os.fspath(spec)
    kind = None
    head, sep, rest = text.partition(":")
    if sep and head in KINDS:
        kind, text = head, rest
        if not text:
            raise InputError(f"dataset {spec!s} names no path; write {kind}:PATH")
    elif sep and len(head) > 1 and "/" not in head and not Path(text).exists():
        raise InputError(
            f"unknown dataset kind {head!r} in {text!r}; use one of {', '.join(KINDS)}"
        )
    path = Path(text).expanduser()
    labels_p = None if labels is None else Path(labels)
    ci = None if class_index is None else Path(class_index)
    if labels_p is not None and not labels_p.is_file():
        raise InputError(f"labels file {labels_p} does not exist")
    if ci is not None and not ci.is_file():
        raise InputError(f"class-index file {ci} does not exist")
    if not path.exists():
        raise InputError(f"dataset {path} does not exist")
    if kind is None:
        kind = _detect_kind(path, labels_p)
    ds = _open_kind(kind, path, labels_p, ci)
    if len(ds) == 0:
        raise InputError(
            f"dataset {spec!s} ({kind}) has no samples; give a dataset with at least one image"
        )
    if ci is not None and ds.labels is not None:
        ds.class_index = str(ci)
    return ds


def _open_kind(kind: str, path: Path, labels_p: Path | None, ci: Path | None) -> Dataset:
    if kind == "folder":
        return _open_folder(path, ci)
    if kind == "flat":
        return _open_flat(path, labels_p, ci)
    if kind == "unlabeled":
        return _open_unlabeled(path)
    if kind == "idx":
        return _open_idx(path, labels_p, ci)
    if kind == "npy":
        return _open_npy(path, labels_p, ci)
    return _open_npz(path, labels_p, ci)


__all__ = ["Dataset", "open_dataset", "shared_samples", "UnreadableImage", "KINDS",
           "IMAGE_SUFFIXES"]
