"""Stage 1 of a study: every model read once, split (cached) and its features extracted (cached).

Feature stores live in the one cache under a key made of what determines them:
the model's digest, the cut, the dataset's fingerprint and the preprocessing.
A later ``check`` or ``run-study`` on the same models and data reuses them, after
the store has verified its shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import FEATURES, cache_root, content_key
from ..data import shared_samples
from ..errors import InputError, UsageError
from ..extract import FeatureStore, extract_features
from ..graph import ModelInfo, SplitResult, read_model
from ..graph.split_cache import split_cached
from .settings import StudySettings


@dataclass
class PreparedModel:
    """One model made ready for a study: its description, split parts and feature stores."""

    name: str
    info: ModelInfo
    split: SplitResult
    val_store: FeatureStore
    train_store: FeatureStore | None = None

    @property
    def path(self) -> Path:
        return self.info.path


def model_names(models: list[Path], names: list[str] | None) -> list[str]:
    """Display names: ``names`` (checked) or the file names without ``.onnx``."""
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


def read_models(paths) -> list[ModelInfo]:
    """Each model read once (safe loader, digest, preprocessing, labels)."""
    infos = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(f"model {p} does not exist")
        infos.append(read_model(p))
    return infos


def features_folder(info: ModelInfo, split: SplitResult, fingerprint: str,
                    cache: str | os.PathLike | None) -> Path:
    """The cache folder of ``info``'s features (at ``split``'s cut) of one dataset."""
    key = content_key("features/1", info.sha256, split.cut_tensor, fingerprint,
                      info.preprocess.digest())
    return cache_root(cache) / FEATURES / f"{info.stem[:40]}-{key}"


def extract_cached(info: ModelInfo, split: SplitResult, ds, fingerprint: str,
                   settings: StudySettings, cache, device: str,
                   progress: Callable[[int, int], Any] | None = None) -> FeatureStore:
    """Features of ``ds`` through ``split``'s F, from the cache or extracted into it.

    ``progress(done_rows, total_rows)`` is extract's callback.
    """
    return extract_features(
        info.path,
        ds,
        features_folder(info, split, fingerprint, cache),
        device=device,
        batch_size=settings.batch_size,
        workers=settings.workers,
        max_bad=settings.max_bad,
        preprocess=info.preprocess,
        preprocess_notes=info.preprocess_notes,
        progress=progress,
        split=split,
        engine=settings.engine,
        ray_address=settings.ray_address,
    )


def check_same_samples(stores, names, role: str) -> None:
    """Every store of one role must hold the same samples in the same order."""
    ref = stores[0].ids
    for name, st in zip(names[1:], stores[1:]):
        if st.ids != ref:
            raise InputError(
                f"{role} features of {name} and {names[0]} hold different samples; "
                "extract every model from the same dataset"
            )


def prepare_models(infos: list[ModelInfo], names: list[str], val_ds, train_ds,
                   settings: StudySettings, cache, device: str,
                   say: Callable[[str], Any] | None = None) -> list[PreparedModel]:
    """Split every model (cached) and extract its val (and train) features (cached, resumable).

    ``say(message)`` starts a step; when ``say`` has ``advance(done, total)``
    it gets extract's row counts, and ``finish(note)`` ends a step served from
    the cache (see xnetmap.progress). A plain function gets one line per step.
    """
    say = say or (lambda _m: None)
    datasets = [("val", val_ds)] + ([("train", train_ds)] if train_ds is not None else [])
    prints = {role: ds.fingerprint() for role, ds in datasets}
    out = []
    for name, info in zip(names, infos):
        say(f"{name}: split ({settings.cut})")
        split = split_cached(info, settings.cut, cache)
        stores = {}
        for role, ds in datasets:
            step = f"{name}: features of {role} ({len(ds)} images)"
            finish = getattr(say, "finish", None)
            if finish is not None:
                say(step)
            store = extract_cached(info, split, ds, prints[role], settings, cache, device,
                                   getattr(say, "advance", None))
            cached = (getattr(store, "run", None) or {}).get("reused")
            if finish is None:
                say(step + (" (cached)" if cached else ""))
            elif cached:
                finish("(cached)")
            stores[role] = store
        out.append(PreparedModel(name, info, split, stores["val"], stores.get("train")))
    for role, _ds in datasets:
        check_same_samples([p.val_store if role == "val" else p.train_store for p in out],
                           names, role)
    return out


def valid_rows(stores) -> np.ndarray:
    """Indices of samples readable in every store."""
    valid = np.ones(stores[0].n, dtype=bool)
    for st in stores:
        valid &= ~np.asarray(st.mask, bool)
    return np.flatnonzero(valid)


def train_val_overlap(train_ds, val_ds, *, strict: bool = False) -> list[str]:
    """A warning note when train and val share images by content; with ``strict``, a refusal.

    The maps are fitted on train: scoring them on the same images flatters the loss.
    """
    if train_ds is None:
        return []
    count, examples = shared_samples(train_ds, val_ds)
    if not count:
        return []
    text = (f"train and val share {count:,} image{'s' * (count != 1)} by content "
            f"({count / max(len(val_ds), 1):.1%} of val, e.g. {', '.join(examples)}): the maps "
            "are scored partly on images they were fitted on")
    if strict:
        raise UsageError(f"{text}; --strict refuses this: remove the shared images from one side")
    return [f"warning: {text}"]


def run_notes(prepared: list[PreparedModel], nonfinite: bool = True) -> list[str]:
    """What was assumed or converted this run, from the store manifests (so cached runs too).

    ``nonfinite``: also warn about NaN/inf feature rows (``check`` gates on them instead).
    """
    notes = []
    for p in prepared:
        for note in p.val_store.manifest.get("preprocess_notes", []):
            notes.append(f"{p.name}: {note}")
    for p in prepared if nonfinite else []:
        for role, store in (("val", p.val_store), ("train", p.train_store)):
            bad = 0 if store is None else int(store.manifest.get("total_nonfinite", 0))
            if bad:
                notes.append(f"warning: {p.name} gives NaN or inf features on {bad:,} {role} "
                             "rows")
    first = prepared[0]
    for role, store in (("val", first.val_store), ("train", first.train_store)):
        counts = (store.manifest.get("conversions") or {}) if store is not None else {}
        if counts:
            notes.append(f"{role} images converted while decoding: " + ", ".join(
                f"{what}: {n:,}" for what, n in counts.items()))
    return notes
