"""Stage 2 of a study: each model's classifier C (its own head or a fitted probe), its logits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import PROBES, cache_root, content_key
from ..errors import UsageError
from ..fsutil import atomic_write_bytes
from ..runtime import run_model
from .labels import check_label_space
from .probe import SoftmaxProbe, export_probe_onnx
from .settings import StudySettings


@dataclass(frozen=True)
class Classifier:
    """An ONNX classifier part and the name of its logits output."""

    path: Path
    logits_name: str | None = None  # None: the model's only output


def classifier_logits(clf: Classifier, X: np.ndarray, device: str) -> np.ndarray:
    """Logits of ``clf`` on features ``X`` of shape (n, D), as float32 (n, n_classes)."""
    outputs = [clf.logits_name] if clf.logits_name else None
    out = run_model(clf.path, X, batch_size=4096, device=device, outputs=outputs)
    return next(iter(out.values())).astype(np.float32, copy=False)


def native_classifiers(prepared) -> list[Classifier]:
    """Each model's own head; refuses models that do not share a label space."""
    widths = [p.info.output_width for p in prepared]
    check_label_space([p.info for p in prepared], [p.name for p in prepared], widths)
    return [Classifier(Path(p.split.classifier_path), p.split.logits_name) for p in prepared]


def choose_classifiers(prepared, settings: StudySettings, cache, say=None,
                       n_classes: int | None = None) -> list[Classifier]:
    """Each model's C: its own head (``native``, label space checked) or a fitted probe.

    ``n_classes`` (probe head) is the width of the label space; default the
    largest train label + 1, which misses classes absent from the train slice.
    """
    say = say or (lambda _m: None)
    if settings.head == "native":
        return native_classifiers(prepared)
    return [probe_classifier(p.name, p.train_store, cache, settings, say, n_classes)
            for p in prepared]


def store_identity(store) -> list:
    """What fixes a store's features: model, feature extractor (so the cut), data, preprocessing."""
    m = store.manifest
    return [
        m.get("model_sha256"),
        m.get("features_sha256"),
        m.get("cut"),
        m.get("dataset_fingerprint"),
        m.get("preprocess_digest") or m.get("preprocess"),
    ]


def probe_classifier(name: str, train_store, cache, settings: StudySettings,
                     say: Callable[[str], Any], n_classes: int | None = None) -> Classifier:
    """Fit (or reuse) a softmax probe on ``train_store`` and export it as an ONNX classifier."""
    key = content_key("probe/4", store_identity(train_store), settings.seed, n_classes)
    out = cache_root(cache) / PROBES / f"{key}.classifier.onnx"
    if out.exists():
        say(f"{name}: probe (cached)")
        return Classifier(out)
    say(f"{name}: fit softmax probe on train features")
    labels = train_store.labels
    if labels is None:
        raise UsageError("--head probe needs train labels")
    rows = np.flatnonzero(~np.asarray(train_store.mask, bool))
    X = train_store.take(rows)
    y = np.asarray(labels)[rows]
    n_classes = max(int(y.max()) + 1, n_classes or 0)
    probe = SoftmaxProbe(n_classes=n_classes).fit(X, y)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    export_probe_onnx(probe, tmp, feature_dim=X.shape[1])
    atomic_write_bytes(out, tmp.read_bytes())
    tmp.unlink()
    return Classifier(out)
