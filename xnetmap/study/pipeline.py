"""``run_study``: the paper's experiment for any set of ONNX classifiers.

For every model: split (cached), extract train and val features (cached,
resumable), score its own classifier on val. For every ordered pair (A, B):
fit ``M_{A→B}`` on train features (cached), score ``C_B(M_{A→B} F_A(val))``
against ``C_B(F_B(val))``, and measure linear CKA between the two feature
spaces. Everything on disk is keyed by content (model digest, dataset
fingerprint, preprocessing, settings), so a second run with the same inputs
recomputes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UsageError

HEADS = ("native", "probe")


@dataclass(frozen=True)
class StudySettings:
    """Everything that changes a study's numbers (and so its cache keys).

    Attributes
    ----------
    head : {"native", "probe"}
        ``native``: the models' own classifiers (needs a shared label space);
        ``probe``: a softmax probe fitted per model on train features and labels.
    cut : str
        Split definition (``pooled`` or ``penultimate``).
    solver : str
        Map solver (``gd``, ``lstsq``, ``ridge``, ``procrustes``).
    fit : dict
        Extra :class:`xnetmap.fit.AffineMap` hyperparameters.
    device : str
        ``cpu``, ``cuda`` or ``auto`` (extraction and fitting).
    batch_size, workers : int
        Extraction batch size and decode threads.
    max_bad : float
        Largest allowed fraction of unreadable images per dataset.
    n_boot : int
        Bootstrap resamples for the loss interval.
    seed : int
        Seeds the map fit and the bootstrap.
    """

    head: str = "native"
    cut: str = "pooled"
    solver: str = "gd"
    fit: dict = field(default_factory=dict)
    device: str = "cpu"
    batch_size: int = 128
    workers: int | None = None
    max_bad: float = 0.0
    n_boot: int = 1000
    seed: int = 0

    def validate(self) -> None:
        if self.head not in HEADS:
            raise UsageError(f"--head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.n_boot < 1:
            raise UsageError(f"--bootstrap must be at least 1 resample, got {self.n_boot}")


@dataclass
class StudyOutcome:
    """What :func:`run_study` returns: the study, its report files and timings."""

    study: Any
    reports: dict
    seconds: dict
    cache_dir: Path


@dataclass
class PreparedModel:
    """One model made ready for a study: its split parts and feature stores."""

    name: str
    path: Path
    split: Any
    val_store: Any
    train_store: Any = None


def prepare_models(
    model_paths, names, val_ds, train_ds, settings, cache: Path, device: str, say=None
) -> list[PreparedModel]:
    """Split every model (cached) and extract its val (and train) features (cached, resumable)."""
    from ..graph import file_sha256, split_model

    say = say or (lambda _m: None)
    out = []
    val_fp = val_ds.fingerprint()
    train_fp = train_ds.fingerprint() if train_ds is not None else None
    for name, path in zip(names, model_paths):
        say(f"{name}: split ({settings.cut})")
        digest = file_sha256(path)
        # one folder per (model, cut): alternating cuts never re-split over each other
        stem = path.name.removesuffix(".onnx")
        split_dir = cache / "splits" / f"{stem}-{digest[:12]}-{_slug(settings.cut)}"
        res = split_model(path, split_dir, cut=settings.cut)
        stores = {}
        for role, ds, fp in (("val", val_ds, val_fp), ("train", train_ds, train_fp)):
            if ds is None:
                continue
            store_dir = cache / "features" / f"{digest[:12]}-{settings.cut}" / f"{role}-{fp[:12]}"
            say(f"{name}: features of {role} ({len(ds)} images)")
            stores[role] = _extract(res, ds, store_dir, settings, device)
        out.append(PreparedModel(name, Path(path), res, stores["val"], stores.get("train")))
    _check_same_samples([p.val_store for p in out], names, "val")
    if train_ds is not None:
        _check_same_samples([p.train_store for p in out], names, "train")
    return out


def choose_classifiers(
    prepared: list[PreparedModel], settings, cache: Path, say=None, n_classes: int | None = None
) -> list[Path]:
    """Each model's C: its own head (``native``, label space checked) or a fitted probe.

    ``n_classes`` (probe head) is the width of the label space; default the
    largest train label + 1, which misses classes absent from the train slice.
    """
    say = say or (lambda _m: None)
    if settings.head == "native":
        widths = [_classifier_width(p.split.classifier_path) for p in prepared]
        _check_label_space([p.path for p in prepared], [p.name for p in prepared], widths)
        return [Path(p.split.classifier_path) for p in prepared]
    return [
        _probe_classifier(p.name, p.train_store, cache, settings, say, n_classes)
        for p in prepared
    ]


def valid_rows(stores) -> np.ndarray:
    """Indices of samples readable in every store."""
    valid = np.ones(stores[0].n, dtype=bool)
    for st in stores:
        valid &= ~np.asarray(st.mask, bool)
    return np.flatnonzero(valid)


def _key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _model_names(models: list[Path], names: list[str] | None) -> list[str]:
    if names:
        if len(names) != len(models):
            raise UsageError(f"--names gives {len(names)} names for {len(models)} models")
        if len(set(names)) != len(names) or not all(names):
            raise UsageError(
                f"--names must give each model a different, non-empty name; got {names}"
            )
        return list(names)
    stems = [p.name.removesuffix(".onnx") for p in models]
    if len(set(stems)) != len(stems):
        raise UsageError(
            f"two models share a file name ({', '.join(stems)}); give --names to tell them apart"
        )
    return stems


def _labels_meta(model_path: Path) -> list[str] | None:
    from ..data import LABELS_KEY
    from ..graph import load_model

    model = load_model(model_path, load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == LABELS_KEY:
            try:
                labels = json.loads(prop.value)
            except ValueError as err:
                raise InputError(
                    f"{model_path}: metadata {LABELS_KEY} is not JSON ({err})"
                ) from err
            return [str(x) for x in labels]
    return None


def _check_label_space(models, names, widths) -> None:
    """``--head native`` needs every classifier to speak the same label space."""
    label_lists = [_labels_meta(m) for m in models]
    known = [(n, lab) for n, lab in zip(names, label_lists) if lab is not None]
    if len(set(widths)) != 1:
        listing = ", ".join(f"{n}: {w}" for n, w in zip(names, widths))
        raise UsageError(
            f"--head native needs a shared label space but the classifiers output different "
            f"numbers of classes ({listing}); use --head probe to fit a linear probe per model"
        )
    for n, lab in known[1:]:
        if lab != known[0][1]:
            raise UsageError(
                f"--head native needs a shared label space but {n} and {known[0][0]} carry "
                f"different xnetmap.labels metadata; use --head probe"
            )


def align_labels(labels: np.ndarray, ds, model_labels: list[str] | None) -> np.ndarray:
    """Re-index a dataset's labels into the models' class order (``--head native``).

    A folder dataset numbers its classes by sorted folder name, which rarely is the
    order of the classifier's outputs. When the dataset's class names are known and
    all appear in the model's ``xnetmap.labels``, each label is mapped to the
    model's index of its name; names unrelated to the model's (e.g. folders
    ``0``..``9``) are left as they are; a partial overlap is an error.

    Parameters
    ----------
    labels : ndarray of shape (n,), int
        Class ids in the dataset's numbering.
    ds : Dataset
        Supplies ``class_names`` and, for messages, ``describe()``.
    model_labels : list of str or None
        The models' class names, index = output.
    """
    names = getattr(ds, "class_names", None)
    if not names or not model_labels or list(names) == list(model_labels):
        return labels
    index = {n: i for i, n in enumerate(model_labels)}
    unknown = [n for n in names if n not in index]
    if len(unknown) == len(names):
        return labels
    if unknown:
        raise InputError(
            f"{ds.describe()}: classes {unknown[:5]} are not among the models' labels "
            f"({', '.join(model_labels[:5])}...); give val images of the models' classes, "
            "or use --head probe"
        )
    perm = np.array([index[n] for n in names], dtype=np.int64)
    return perm[labels]


def classifier_logits(classifier_path: Path, X: np.ndarray, device: str) -> np.ndarray:
    """Logits of classifier C on features ``X`` (n, D)."""
    from ..runtime import run_model

    out = run_model(classifier_path, X, batch_size=4096, device=device)
    return _first_output(classifier_path, out)


def _first_output(classifier_path: Path, out: dict) -> np.ndarray:
    from ..graph import load_model

    if len(out) == 1:
        return next(iter(out.values())).astype(np.float32, copy=False)
    split_json = Path(str(classifier_path).removesuffix(".classifier.onnx") + ".split.json")
    if split_json.exists():
        name = json.loads(split_json.read_text()).get("logits_name")
        if name in out:
            return out[name].astype(np.float32, copy=False)
    first = load_model(classifier_path, load_external_data=False).graph.output[0].name
    return out[first].astype(np.float32, copy=False)


def run_study(
    models,
    *,
    val,
    train=None,
    out_dir="xnetmap-study",
    names: list[str] | None = None,
    settings: StudySettings | None = None,
    cache_dir=None,
    pairs: list[tuple[int, int]] | None = None,
    progress: Callable[[str], Any] | None = None,
) -> StudyOutcome:
    """Run the study and write its reports.

    Parameters
    ----------
    models : list of path
        Two or more ONNX classifiers (full models; split on the fly and cached).
    val : str or path or Dataset
        Validation images (labels optional: without them only label-free
        agreement and CKA are measured).
    train : str or path or Dataset, optional
        Unlabeled-or-labeled training images for fitting the maps (required when
        there are pairs to fit; labels required for ``head="probe"``).
    out_dir : path
        Where report.md / report.json / results.csv / report.html go.
    names : list of str, optional
        Display names (Table 1's Description); default the file names.
    settings : StudySettings, optional
    cache_dir : path, optional
        Splits, feature stores, probes and maps (default ``out_dir/cache``).
    pairs : list of (int, int), optional
        Ordered (source, target) model indices to evaluate; default all ordered pairs.
    progress : callable, optional
        Receives one-line status messages.

    Returns
    -------
    StudyOutcome
    """
    from ..data import open_dataset
    from ..report import write_reports
    from ..runtime import resolve_device
    from ..study.evaluate import native_result, pair_result
    from ..study.table import DatasetInfo, Study

    settings = settings or StudySettings()
    settings.validate()
    say = progress or (lambda _m: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    model_paths = [Path(m) for m in models]
    if len(model_paths) < 2:
        raise UsageError(
            "run-study compares models: give at least two ONNX classifiers "
            f"(got {len(model_paths)})"
        )
    for m in model_paths:
        if not m.exists():
            raise InputError(f"model {m} does not exist")
    names = _model_names(model_paths, names)
    device = resolve_device(settings.device)
    out_dir = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else out_dir / "cache"
    if pairs is None:
        pairs = [(i, j) for i in range(len(model_paths)) for j in range(len(model_paths)) if i != j]
    if pairs and train is None:
        raise UsageError("fitting the maps needs training images: give --train DATA")

    val_ds = open_dataset(val) if isinstance(val, (str, Path)) else val
    train_ds = None
    if train is not None:
        train_ds = open_dataset(train) if isinstance(train, (str, Path)) else train
    if settings.head == "probe":
        if train_ds is None or train_ds.labels is None:
            raise UsageError("--head probe fits a classifier per model: give --train with labels")

    # ---- per model: split, extract, classifier -------------------------------------------
    t0 = time.perf_counter()
    need_train = bool(pairs) or settings.head == "probe"
    prepared = prepare_models(
        model_paths, names, val_ds, train_ds if need_train else None, settings, cache, device, say
    )
    timings["extract"] = time.perf_counter() - t0
    splits = [p.split for p in prepared]
    val_stores = [p.val_store for p in prepared]
    train_stores = [p.train_store for p in prepared]
    val_fp = prepared[0].val_store.manifest.get("dataset_fingerprint", "")
    train_fp = (
        prepared[0].train_store.manifest.get("dataset_fingerprint", "")
        if prepared[0].train_store is not None
        else (train_ds.fingerprint() if train_ds is not None else None)
    )
    t0 = time.perf_counter()
    n_classes = None
    if settings.head == "probe":
        # val labels speak the train set's class numbering; widths cover both sets
        n_classes = len(train_ds.class_names or [])
        if val_stores[0].labels is not None and len(val_stores[0].labels):
            n_classes = max(n_classes, int(np.asarray(val_stores[0].labels).max()) + 1)
    classifiers = choose_classifiers(prepared, settings, cache, say, n_classes or None)
    timings["classifiers"] = time.perf_counter() - t0

    rows = valid_rows(val_stores)
    if len(rows) == 0:
        raise InputError("every val image is unreadable for at least one model; nothing to score")
    labels = val_stores[0].labels
    labels_v = None if labels is None else np.asarray(labels)[rows]
    reindexed = False
    if labels_v is not None:
        # native: the models' class order; probe: the train set's class numbering
        if settings.head == "native":
            class_names = next((lab for lab in map(_labels_meta, model_paths) if lab), None)
        else:
            class_names = train_ds.class_names
        aligned = align_labels(labels_v, val_ds, class_names)
        reindexed = aligned is not labels_v
        labels_v = aligned
    val_feats = [st.take(rows) for st in val_stores]

    # ---- native results --------------------------------------------------------------------
    native_logits, model_results = [], []
    for name, res, clf, F in zip(names, splits, classifiers, val_feats):
        logits = classifier_logits(clf, F, device)
        native_logits.append(logits)
        model_results.append(
            native_result(
                name,
                logits,
                labels_v,
                sha256=res.model_sha256,
                feature_dim=int(F.shape[1]),
                path=str(res.model_path),
                cut=str(res.cut_tensor),
            )
        )

    # ---- pairs --------------------------------------------------------------------------------
    t0 = time.perf_counter()
    pair_results = []
    cka_cache: dict[tuple[int, int], float] = {}
    fit_params = map_fit_params(settings, device)
    for i, j in pairs:
        say(f"{names[i]} → {names[j]}: fit map ({settings.solver})")
        amap, map_path = fit_cached(
            train_stores[i], train_stores[j], cache, fit_params, names[i], names[j]
        )
        mapped = amap.transform(val_feats[i])
        mapped_logits = classifier_logits(classifiers[j], mapped, device)
        key = (min(i, j), max(i, j))
        if key not in cka_cache:
            from .cka import linear_cka

            cka_cache[key] = float(linear_cka(val_feats[i], val_feats[j]))
        m = getattr(amap, "metrics_", {}) or {}
        pair_results.append(
            pair_result(
                names[i],
                names[j],
                native_logits[j],
                mapped_logits,
                labels_v,
                n_boot=settings.n_boot,
                seed=settings.seed,
                fit_cosine=m.get("cosine"),
                fit_r2=m.get("r2"),
                cka=cka_cache[key],
                map_path=str(map_path),
            )
        )
    timings["pairs"] = time.perf_counter() - t0

    datasets = [
        DatasetInfo("val", val_ds.describe(), val_fp, int(len(rows))),
    ]
    if train_ds is not None:
        datasets.append(DatasetInfo("train", train_ds.describe(), train_fp, len(train_ds)))
    n_masked = int(val_stores[0].n - len(rows))
    study = Study(
        models=model_results,
        pairs=pair_results,
        labelled=labels_v is not None,
        head=settings.head,
        datasets=datasets,
        settings={
            **{k: v for k, v in asdict(settings).items() if k != "fit"},
            "fit": dict(settings.fit),
            "device_resolved": device,
            "val_unreadable_excluded": n_masked,
            "val_labels_reindexed": reindexed,
        },
    )
    reports = write_reports(study, out_dir)
    timings["total"] = time.perf_counter() - t_start
    return StudyOutcome(study=study, reports=reports, seconds=timings, cache_dir=cache)


def _extract(split_res, ds, store_dir: Path, settings: StudySettings, device: str):
    from ..extract import extract_features

    return extract_features(
        split_res.features_path,
        ds,
        store_dir,
        device=device,
        batch_size=settings.batch_size,
        workers=settings.workers,
        max_bad=settings.max_bad,
        preprocess=_preprocess_of(split_res.model_path),
    )


def _preprocess_of(model_path):
    from ..graph import model_preprocess

    spec, _notes = model_preprocess(model_path)
    return spec


def _classifier_width(classifier_path) -> int | None:
    from ..graph import load_model

    model = load_model(classifier_path, load_external_data=False)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) >= 2 and dims[-1].HasField("dim_value"):
        return int(dims[-1].dim_value)
    return None


def _check_same_samples(stores, names, role: str) -> None:
    ref = stores[0].ids
    for name, st in zip(names[1:], stores[1:]):
        if st.ids != ref:
            raise InputError(
                f"{role} features of {name} and {names[0]} hold different samples; "
                "extract every model from the same dataset"
            )


def _probe_classifier(
    name, train_store, cache: Path, settings: StudySettings, say, n_classes: int | None = None
) -> Path:
    """Fit (or reuse) a softmax probe on ``train_store`` and export it as an ONNX classifier."""
    from ..fsutil import atomic_write_bytes
    from .probe import SoftmaxProbe, export_probe_onnx

    key = _key("probe/2", _store_identity(train_store), settings.seed, n_classes)
    out = cache / "probes" / f"{key}.classifier.onnx"
    if out.exists():
        say(f"{name}: probe (cached)")
        return out
    say(f"{name}: fit softmax probe on train features")
    labels = train_store.labels
    if labels is None:
        raise UsageError("--head probe needs train labels")
    rows = np.flatnonzero(~np.asarray(train_store.mask, bool))
    X = train_store.take(rows)
    y = np.asarray(labels)[rows]
    n_classes = max(int(y.max()) + 1, n_classes or 0)
    probe = SoftmaxProbe(n_classes=n_classes).fit(X, y)
    tmp = out.with_suffix(".tmp.onnx")
    export_probe_onnx(probe, tmp, feature_dim=X.shape[1])
    atomic_write_bytes(out, tmp.read_bytes())
    tmp.unlink()
    return out


def _store_identity(store) -> list:
    """What fixes a store's features: model, feature extractor (so the cut), data, preprocessing."""
    m = store.manifest
    return [
        m.get("model_sha256"),
        m.get("features_sha256"),
        m.get("cut"),
        m.get("dataset_fingerprint"),
        m.get("preprocess_digest") or m.get("preprocess"),
    ]


def map_fit_params(settings: StudySettings, device: str) -> dict:
    """AffineMap parameters of a study's (or check's) maps; fits on the GPU when extraction does."""
    params = {"solver": settings.solver, "seed": settings.seed, **settings.fit}
    if device == "cuda":
        params.setdefault("device", "cuda")
    return params


def map_cache_key(src_store, tgt_store, fit_params: dict) -> str:
    """Content key of the map fitted from ``src_store`` to ``tgt_store`` with ``fit_params``.

    Both stores' feature extractors are part of it: one model split at two cuts
    gives two different maps.
    """
    return _key("map/2", _store_identity(src_store), _store_identity(tgt_store), fit_params)


def fit_cached(src_store, tgt_store, cache: Path, fit_params: dict, src_name: str, tgt_name: str):
    """Fit ``M`` from ``src_store`` to ``tgt_store``, or load the map fitted before."""
    from ..fit import AffineMap, fit_map

    key = map_cache_key(src_store, tgt_store, fit_params)
    safe = f"{_slug(src_name)}-to-{_slug(tgt_name)}-{key}.npz"
    path = cache / "maps" / safe
    if path.exists():
        return AffineMap.load(path), path
    path.parent.mkdir(parents=True, exist_ok=True)
    amap = fit_map(src_store, tgt_store, path, **fit_params)
    return amap, path


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
