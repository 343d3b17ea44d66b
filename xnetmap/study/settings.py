"""``StudySettings``: everything that changes a study's (or a check's) numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError

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
    engine, ray_address : str
        Extraction engine (``local`` or ``ray``) and the Ray cluster to join (see
        :func:`xnetmap.extract.extract_features`); the features do not depend on them.
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
    engine: str = "local"
    ray_address: str | None = None

    def validate(self) -> None:
        """Refuse bad settings before any work (UsageError, exit 2)."""
        if self.head not in HEADS:
            raise UsageError(f"--head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.n_boot < 1:
            raise UsageError(f"--bootstrap must be at least 1 resample, got {self.n_boot}")
