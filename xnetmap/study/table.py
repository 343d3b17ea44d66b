"""Results of a study and the paper's Table 1.

A :class:`Study` holds one :class:`ModelResult` per model (its native accuracy on
val) and one :class:`PairResult` per ordered pair (A, B): A's val features mapped
into B's space and labelled by B's classifier. :func:`table1_rows` lays them out
like Table 1 of McNeely-White et al. (2019)::

    | Description                   | Mapping | Correct | Percent | Loss |
    | Inception-v4                  | I → I   | 40,037  | 80.2    |      |
    | ResNet-v2 152                 | R → R   | 39,022  | 78.0    |      |
    | Inception-v4 to ResNet-v2 152 | I → R   | 39,686  | 79.4    | -1.4 |
    | ResNet-v2 152 to Inception-v4 | R → I   | 37,866  | 75.7    | 4.5  |

Percent and Loss are computed from the counts (not from rounded percentages)
and shown with one decimal; the loss is blank on native rows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from xnetmap import __version__
from xnetmap.errors import InputError

ARROW = "→"


class _Percentages:
    """``percent`` and ``top5_percent`` from the ``correct`` / ``top5_correct`` counts of ``n``."""

    @property
    def percent(self) -> float | None:
        return _pct(self.correct, self.n)

    @property
    def top5_percent(self) -> float | None:
        return _pct(self.top5_correct, self.n)


@dataclass
class ModelResult(_Percentages):
    """One model's native result on val: its classifier on its own features.

    Attributes
    ----------
    name : str
        Display name (Table 1's Description), e.g. ``"Inception-v4"``.
    n : int
        Number of val samples scored.
    correct, top5_correct : int or None
        Top-1 / top-5 correct counts; None when val has no labels.
    sha256 : str
        Digest of the model file.
    feature_dim : int or None
        Width D of the feature vector F(x).
    path : str
        Model file as given.
    cut : str
        Where the model was split.
    """

    name: str
    n: int
    correct: int | None = None
    top5_correct: int | None = None
    sha256: str = ""
    feature_dim: int | None = None
    path: str = ""
    cut: str = ""


@dataclass
class PairResult(_Percentages):
    """Ordered pair (source A, target B): ``C_B(M_{A→B} F_A(val))``.

    Attributes
    ----------
    source, target : str
        Model names (A and B).
    n : int
        Number of val samples scored.
    correct, top5_correct : int or None
        Correct counts of B's classifier on mapped A features.
    native_correct : int or None
        B's own correct count on the same samples (the loss's reference).
    loss : float or None
        ``Acc(C_B(F_B)) - Acc(C_B(M F_A))`` in points; negative = gain.
    loss_ci : tuple of float or None
        95 % paired bootstrap interval of the loss, in points.
    agreement : float or None
        Fraction (0..1) of samples where ``C_B(M F_A)`` and ``C_B(F_B)`` predict the same class.
    mcnemar_b, mcnemar_c : int or None
        Discordant counts: native right / mapped wrong, and native wrong / mapped right.
    mcnemar_statistic, mcnemar_p : float or None
    mcnemar_method : str or None
        ``"exact"`` or ``"chi2-cc"``.
    fit_cosine, fit_r2 : float or None
        The map's held-out cosine similarity and R² on train features.
    cka : float or None
        Linear CKA between A's and B's val features (symmetric).
    cka_debiased : float or None
        The same with the unbiased HSIC estimator (Song et al. 2012): not inflated
        when the samples are few for the feature widths; NaN below 4 samples.
    map_path : str
        The fitted map file.
    """

    source: str
    target: str
    n: int
    correct: int | None = None
    top5_correct: int | None = None
    native_correct: int | None = None
    loss: float | None = None
    loss_ci: tuple[float, float] | None = None
    agreement: float | None = None
    mcnemar_b: int | None = None
    mcnemar_c: int | None = None
    mcnemar_statistic: float | None = None
    mcnemar_p: float | None = None
    mcnemar_method: str | None = None
    fit_cosine: float | None = None
    fit_r2: float | None = None
    cka: float | None = None
    map_path: str = ""
    cka_debiased: float | None = None


@dataclass
class DatasetInfo:
    """Provenance of a dataset used by the study (``role`` is ``"train"`` or ``"val"``)."""

    role: str
    description: str
    fingerprint: str = ""
    n: int | None = None


def _default_version() -> str:
    return __version__


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Study:
    """Everything a report needs.

    Attributes
    ----------
    models : list of ModelResult
        In the order given by the user; this order fixes rows and matrix axes.
    pairs : list of PairResult
        Ordered pairs (source != target).
    labelled : bool
        False when val has no labels: only label-free agreement (and CKA) is measured.
    head : str
        ``"native"`` (the models' own classifiers) or ``"probe"`` (softmax probes).
    datasets : list of DatasetInfo
    settings : dict
        JSON-able solver / device / bootstrap settings, reported verbatim.
    notes : list of str
        What the run assumed, converted or warns about (preprocessing assumed from
        the input shape, image conversions, train/val overlap...), shown in the reports.
    xnetmap_version, created : str
        Provenance; ``created`` is an ISO-8601 UTC timestamp.
    """

    models: list[ModelResult]
    pairs: list[PairResult]
    labelled: bool = True
    head: str = "native"
    datasets: list[DatasetInfo] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    xnetmap_version: str = field(default_factory=_default_version)
    created: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise InputError(f"model names in a study must be unique; got {names}")
        known = set(names)
        for p in self.pairs:
            if p.source not in known or p.target not in known:
                raise InputError(
                    f"pair {p.source!r} -> {p.target!r} names a model not in the study {names}"
                )

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def codes(self) -> dict[str, str]:
        """Short code of each model (``I``, ``R``...), unique within the study."""
        return short_codes(self.names)

    def model(self, name: str) -> ModelResult:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def pair(self, source: str, target: str) -> PairResult | None:
        for p in self.pairs:
            if p.source == source and p.target == target:
                return p
        return None

    def mapping(self, source: str, target: str) -> str:
        """``"I → R"`` for source I and target R."""
        c = self.codes
        return f"{c[source]} {ARROW} {c[target]}"

    def matrix(self, attribute: str, diagonal: float = math.nan) -> np.ndarray:
        """(N, N) matrix of a pair attribute; rows = source A, columns = target B.

        Missing pairs and None values are NaN; the diagonal is ``diagonal``.
        For ``"cka"`` (symmetric) a pair missing in one direction is filled from the other.
        """
        names = self.names
        N = len(names)
        M = np.full((N, N), math.nan)
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                if i == j:
                    M[i, j] = diagonal
                    continue
                p = self.pair(a, b)
                v = getattr(p, attribute) if p is not None else None
                if v is None and attribute == "cka":
                    q = self.pair(b, a)
                    v = q.cka if q is not None else None
                if v is not None:
                    M[i, j] = float(v)
        return M


def _pct(count: int | None, n: int) -> float | None:
    if count is None or n <= 0:
        return None
    return 100.0 * count / n


# --------------------------------------------------------------------------- short codes

_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _initials(name: str) -> str:
    """Word initials, digits kept: ``resnet_small`` -> ``RS``, ``InceptionV4`` -> ``IV4``."""
    toks = _TOKEN.findall(name)
    return "".join(t if t.isdigit() else t[0].upper() for t in toks) or "?"


def short_codes(names: list[str]) -> dict[str, str]:
    """Short, unique codes for model names, as in Table 1's ``I → R``.

    The first letter of the name (upper-cased); where first letters clash, the
    initials of the name's words (``resnet_small`` -> ``RS``); where those still
    clash, the first letter plus a running number (``R1``, ``R2``).
    """
    first = {n: _initials(n)[0] for n in names}
    out: dict[str, str] = {}
    for letter in dict.fromkeys(first.values()):
        group = [n for n in names if first[n] == letter]
        if len(group) == 1:
            out[group[0]] = letter
            continue
        inits = [_initials(n) for n in group]
        if len(set(inits)) != len(group):
            inits = [f"{letter}{i + 1}" for i in range(len(group))]
        out.update(zip(group, inits, strict=True))
    # a generated code may collide with another group's single letter; fall back to numbers
    if len(set(out.values())) != len(out):
        out = {n: f"M{i + 1}" for i, n in enumerate(names)}
    return out


# --------------------------------------------------------------------------- Table 1


@dataclass(frozen=True)
class Table1Row:
    """One row of Table 1 (numbers, unformatted; ``loss`` None on native rows)."""

    description: str
    mapping: str
    correct: int
    n: int
    percent: float | None
    loss: float | None

    def cells(self) -> tuple[str, str, str, str, str]:
        """Formatted cells: Description, Mapping, Correct, Percent, Loss."""
        return (
            self.description,
            self.mapping,
            format_count(self.correct),
            "n/a" if self.percent is None else format_points(self.percent),
            "" if self.loss is None else format_points(self.loss),
        )


TABLE1_HEADER = ("Description", "Mapping", "Correct", "Percent", "Loss")


def format_count(n: int) -> str:
    """``40037`` -> ``"40,037"``."""
    return f"{int(n):,}"


def format_points(x: float, decimals: int = 1) -> str:
    """One decimal, never ``-0.0``."""
    s = f"{x:.{decimals}f}"
    if s.startswith("-") and float(s) == 0.0:
        s = s[1:]
    return s


def table1_rows(study: Study) -> list[Table1Row]:
    """Rows of Table 1: each model's native accuracy (A → A), then each ordered pair.

    Pairs follow the model order (A→B for A, then B, in ``study.models``);
    missing pairs are skipped. Raises InputError for a label-free study.
    """
    if not study.labelled:
        raise InputError("Table 1 needs val labels; this study is label-free (agreement only)")
    rows = []
    for m in study.models:
        if m.correct is None:
            raise InputError(f"model {m.name!r} has no correct count although val is labelled")
        rows.append(
            Table1Row(m.name, study.mapping(m.name, m.name), m.correct, m.n, m.percent, None)
        )
    for a in study.names:
        for b in study.names:
            p = study.pair(a, b) if a != b else None
            if p is None:
                continue
            if p.correct is None:
                raise InputError(f"pair {a!r} -> {b!r} has no correct count")
            loss = p.loss
            if loss is None and p.native_correct is not None:
                loss = 100.0 * (p.native_correct - p.correct) / p.n
            rows.append(
                Table1Row(f"{a} to {b}", study.mapping(a, b), p.correct, p.n, p.percent, loss)
            )
    return rows
