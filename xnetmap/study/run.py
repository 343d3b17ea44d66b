"""``run_study``: the paper's experiment for any set of ONNX classifiers.

The stages, each a public function:

1. :func:`~xnetmap.study.prepare.prepare_models`: every model read once, split
   and its train/val features extracted (both cached);
2. :func:`~xnetmap.study.classifiers.choose_classifiers`: each model's C;
3. :func:`~xnetmap.study.scores.score_native`: C_B(F_B(val)) for every model;
4. :func:`~xnetmap.study.scores.score_pairs`: for every ordered pair (A, B), fit
   ``M_{A→B}`` on train features (cached), score ``C_B(M_{A→B} F_A(val))``, CKA.

It returns a :class:`Study` value; writing reports is the caller's job
(:func:`xnetmap.report.write_study`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..data import open_dataset
from ..errors import UsageError
from ..runtime import resolve_device
from .classifiers import choose_classifiers
from .labels import check_label_space, place_classes, place_on_train, shared_labels
from .prepare import model_names, prepare_models, read_models, run_notes, train_val_overlap
from .scores import cka_sample_note, score_native, score_pairs, val_features
from .settings import StudySettings
from .table import DatasetInfo, Study


@dataclass
class StudyOutcome:
    """What :func:`run_study` returns: the study, its maps (cache files) and timings."""

    study: Study
    map_files: dict
    seconds: dict


def _open(data, class_index=None):
    if isinstance(data, (str, Path)):
        return open_dataset(data, class_index=class_index)
    return data


def _check_inputs(model_paths, train, pairs, settings) -> None:
    if len(model_paths) < 2:
        raise UsageError(
            "run-study compares models: give at least two ONNX classifiers "
            f"(got {len(model_paths)})"
        )
    if pairs and train is None:
        raise UsageError("fitting the maps needs training images: give --train DATA")
    if settings.head == "probe" and train is None:
        raise UsageError("--head probe fits a classifier per model: give --train with labels")


def place_val_classes(infos, names, val_ds, train_ds, head: str):
    """Before any work: each val class placed on an output of every model's C (or refused).

    Returns the class map for :func:`~xnetmap.study.scores.val_features` and notes.
    """
    if head == "probe":
        return place_on_train(val_ds, train_ds), []
    widths = [info.output_width for info in infos]
    check_label_space(infos, names, widths)
    return place_classes(val_ds, widths[0], shared_labels(infos))


def _probe_width(train_ds) -> int | None:
    """The probe's class count: the train set's classes (val classes are among them)."""
    return len(train_ds.class_names or []) or None


def _study_value(prepared, native, pair_scores, val, val_ds, train_ds, settings, device, notes):
    datasets = [DatasetInfo("val", val_ds.describe(),
                            prepared[0].val_store.manifest.get("dataset_fingerprint", ""),
                            int(len(val.rows)))]
    if train_ds is not None:
        store = prepared[0].train_store
        fp = store.manifest.get("dataset_fingerprint", "") if store else train_ds.fingerprint()
        datasets.append(DatasetInfo("train", train_ds.describe(), fp, len(train_ds)))
    return Study(
        models=native, pairs=pair_scores.results, labelled=val.labels is not None,
        head=settings.head, datasets=datasets, notes=list(notes),
        settings={
            **{k: v for k, v in asdict(settings).items() if k != "fit"},
            "fit": dict(settings.fit),
            "device_resolved": device,
            "val_unreadable_excluded": val.n_masked,
            "val_labels_reindexed": val.reindexed,
        },
    )


def run_study(models, *, val, train=None, names: list[str] | None = None,
              settings: StudySettings | None = None, cache_dir=None,
              pairs: list[tuple[int, int]] | None = None,
              progress: Callable[[str], Any] | None = None, class_index=None,
              strict: bool = False) -> StudyOutcome:
    """Run the study: split, extract, fit every ordered pair's map, score Table 1.

    Parameters
    ----------
    models : list of path
        Two or more ONNX classifiers (full models; split on the fly and cached).
    val : str or path or Dataset
        Validation images (labels optional: without them only label-free
        agreement and CKA are measured).
    train : str or path or Dataset, optional
        Training images for fitting the maps (required when there are pairs to
        fit; labels required for ``head="probe"``).
    names : list of str, optional
        Display names (Table 1's Description); default the file names.
    settings : StudySettings, optional
    cache_dir : path, optional
        The cache folder (default :func:`xnetmap.cache.cache_root`).
    pairs : list of (int, int), optional
        Ordered (source, target) model indices; default all ordered pairs.
    progress : callable, optional
        Receives one-line status messages.
    class_index : path, optional
        Class-index file for datasets given as paths (class name -> output index).
    strict : bool
        Refuse (exit 2) when train and val share images, instead of a note.

    Returns
    -------
    StudyOutcome
    """
    settings = settings or StudySettings()
    settings.validate()
    say = progress or (lambda _m: None)
    t_start = time.perf_counter()
    model_paths = [Path(m) for m in models]
    if pairs is None:
        pairs = [(i, j) for i in range(len(model_paths)) for j in range(len(model_paths))
                 if i != j]
    _check_inputs(model_paths, train, pairs, settings)
    names = model_names(model_paths, names)
    device = resolve_device(settings.device)
    infos = read_models(model_paths)
    val_ds = _open(val, class_index)
    train_ds = _open(train, class_index) if train is not None else None
    if settings.head == "probe" and train_ds.labels is None:
        raise UsageError("--head probe fits a classifier per model: give --train with labels")
    class_map, notes = place_val_classes(infos, names, val_ds, train_ds, settings.head)
    notes += train_val_overlap(train_ds, val_ds, strict=strict)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    need_train = bool(pairs) or settings.head == "probe"
    prepared = prepare_models(infos, names, val_ds, train_ds if need_train else None,
                              settings, cache_dir, device, say)
    notes = run_notes(prepared) + notes
    timings["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    width = _probe_width(train_ds) if settings.head == "probe" else None
    classifiers = choose_classifiers(prepared, settings, cache_dir, say, width)
    timings["classifiers"] = time.perf_counter() - t0
    val_data = val_features(prepared, class_map)
    notes += cka_sample_note(val_data) if pairs else []
    native_logits, native = score_native(prepared, classifiers, val_data, device)
    t0 = time.perf_counter()
    pair_scores = score_pairs(prepared, classifiers, val_data, native_logits, pairs,
                              settings, cache_dir, device, say)
    timings["pairs"] = time.perf_counter() - t0
    study = _study_value(prepared, native, pair_scores, val_data, val_ds, train_ds,
                         settings, device, notes)
    timings["total"] = time.perf_counter() - t_start
    return StudyOutcome(study=study, map_files=pair_scores.map_files, seconds=timings)
