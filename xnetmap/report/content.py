"""What a study report says, as a list of neutral blocks rendered to Markdown and HTML.

Keeping the content in one place means ``report.md`` and ``report.html`` cannot
disagree. Blocks are :class:`Header`, :class:`Heading`, :class:`Para`, :class:`Bullets`,
:class:`Table` and :class:`Image`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import PurePath

from xnetmap.report.wording import NO_DIFFERENCE, pair_reading
from xnetmap.study.table import (
    TABLE1_HEADER,
    Study,
    format_count,
    format_points,
    table1_rows,
)

LOSS_PNG = "loss.png"
AGREEMENT_PNG = "agreement.png"
CKA_PNG = "cka.png"
FOREST_PNG = "loss_forest.png"
FIGURE_FORMATS = ("svg", "pdf")  # written next to each PNG, for papers
TABLE1_TEX = "table1.tex"

LABEL_FREE_SENTENCE = (
    "The validation set has no labels, so accuracy, the loss, its interval and McNemar's "
    "test cannot be measured: this report gives label-free agreement only (how often B's "
    "classifier gives A's mapped features the same label as B's own features), with CKA "
    "and the quality of each fitted map."
)


@dataclass(frozen=True)
class Header:
    """The page header: title, the models (name, code, SHA-256) and the settings."""

    title: str
    models: tuple[tuple[str, str, str], ...]
    settings: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    name: str = ""  # stable identifier (e.g. "table1"), not rendered


@dataclass(frozen=True)
class Image:
    file: str
    alt: str
    also: tuple[str, ...] = ()  # the same figure in other formats (file names)


def fmt(x, spec: str = "{:.1f}", missing: str = "n/a") -> str:
    """Format a number, ``missing`` for None / NaN."""
    if x is None:
        return missing
    try:
        if isinstance(x, float) and not math.isfinite(x):
            return missing
    except TypeError:
        return missing
    return spec.format(x)


def fmt_p(p) -> str:
    """p-values: three significant digits; a floor for underflow."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if p < 1e-300:
        return "<1e-300"
    return f"{p:.3g}"


def fmt_ci(ci) -> str:
    if ci is None or any(v is None or not math.isfinite(v) for v in ci):
        return "n/a"
    return f"[{format_points(ci[0])}, {format_points(ci[1])}]"


def table1_table(study: Study) -> Table:
    rows = tuple(r.cells() for r in table1_rows(study))
    return Table(TABLE1_HEADER, rows, name="table1")


def matrix_table(study: Study, attribute: str, spec: str, diagonal: str, name: str) -> Table:
    """N x N table of a pair attribute; rows = source A, columns = target B."""
    codes = study.codes
    scale = 100.0 if attribute == "agreement" else 1.0
    header = ("A \\ B", *(codes[n] for n in study.names))
    M = study.matrix(attribute)
    rows = []
    for i, a in enumerate(study.names):
        cells = []
        for j in range(len(study.names)):
            if i == j:
                cells.append(diagonal)
            else:
                v = M[i, j]
                cells.append(fmt(v * scale if math.isfinite(v) else None, spec))
        rows.append((f"{codes[a]} ({a})", *cells))
    return Table(header, tuple(rows), name=name)


def has_cka(study: Study) -> bool:
    return any(p.cka is not None for p in study.pairs)


def _val(study: Study):
    for d in study.datasets:
        if d.role == "val":
            return d
    return None


def build_blocks(study: Study, figure_formats=FIGURE_FORMATS) -> list:
    """The report's content, in order; ``figure_formats``: the figures' files besides PNG."""
    b: list = [_header(study), Heading(1, "xnetmap study"), _intro(study)]
    b.extend(_notes(study))
    if study.labelled:
        b += _labelled_blocks(study)
    else:
        b += _label_free_blocks(study)
    if has_cka(study):
        b.append(Heading(2, "Representational similarity (linear CKA)"))
        b.append(
            Para(
                "Linear CKA between the models' validation features: 1 means the two feature "
                "spaces agree up to a rotation and an isotropic scaling. Computed from d × d "
                "cross-covariances, without an n × n Gram matrix."
            )
        )
        b.append(matrix_table(study, "cka", "{:.3f}", "1.000", "cka_matrix"))
        b.extend(_debiased_cka(study))
    b.append(Heading(2, "Fit quality (held-out training features)"))
    b.append(
        Table(
            ("Mapping", "Cosine", "R²"),
            tuple(
                (
                    study.mapping(p.source, p.target),
                    fmt(p.fit_cosine, "{:.4f}"),
                    fmt(p.fit_r2, "{:.4f}"),
                )
                for p in study.pairs
            ),
            name="fit",
        )
    )
    b += _figure_blocks(study, tuple(f for f in figure_formats if f != "png"))
    b += _provenance_blocks(study)
    b.append(Para(f"xnetmap {study.xnetmap_version}, report created {study.created}."))
    return b


def _settings_items(study: Study) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(k), _setting(v)) for k, v in sorted({"head": study.head, **study.settings}.items())
    )


def _header(study: Study) -> Header:
    codes = study.codes
    return Header(
        " vs ".join(study.names),
        tuple((m.name, codes[m.name], m.sha256 or "n/a") for m in study.models),
        _settings_items(study),
    )


def _intro(study: Study) -> Para:
    val = _val(study)
    n_val = study.models[0].n if study.models else 0
    where = (
        f"{val.description} ({format_count(n_val)} samples)"
        if val
        else (f"{format_count(n_val)} validation samples")
    )
    head = "their own classifiers" if study.head == "native" else "softmax linear probes"
    return Para(
        f"{len(study.models)} models compared on {where}, using {head} as C. Each ordered pair "
        "A → B maps A's features into B's feature space with an affine map fitted on "
        "training features, and labels them with B's classifier. Loss = "
        "Acc(C_B(F_B)) − Acc(C_B(M F_A)) in points; a negative loss is a gain, and a loss "
        f'whose 95 % interval contains 0 is read as "{NO_DIFFERENCE}".'
    )


def finding(study: Study, p) -> str:
    """One sentence on a pair's loss, worded from its interval (see :mod:`.wording`)."""
    reading = pair_reading(p)
    what = f"{p.source} → {p.target} ({study.mapping(p.source, p.target)})"
    if not reading:
        return f"{what}: no loss measured."
    ci = "" if p.loss_ci is None else f", 95 % CI {fmt_ci(p.loss_ci)}"
    numbers = f"loss {format_points(p.loss)} points{ci}"
    if reading == NO_DIFFERENCE:
        return f"{what}: {NO_DIFFERENCE} ({numbers})."
    size = format_points(abs(p.loss))
    return f"{what}: a {reading} of {size} points ({numbers})."


def _labelled_blocks(study: Study) -> list:
    b: list = []
    if len(study.models) > 2:
        b.append(Heading(2, "Loss matrix (points)"))
        b.append(matrix_table(study, "loss", "{:.1f}", "—", "loss_matrix"))
        b.append(Heading(2, "Agreement matrix (% of samples)"))
        b.append(matrix_table(study, "agreement", "{:.1f}", "—", "agreement_matrix"))
    b.append(Heading(2, "Table 1"))
    b.append(table1_table(study))
    b.append(Heading(2, "Findings"))
    b.append(Bullets(tuple(finding(study, p) for p in study.pairs)))
    b.append(Heading(2, "Intervals and tests"))
    b.append(
        Para(
            "95 % paired bootstrap intervals of the loss (the same resampled images for "
            "both classifiers' inputs) and McNemar's test between B's predictions on its "
            "own features and on A's mapped features (b: native right and mapped wrong; "
            "c: native wrong and mapped right; exact binomial test when b + c < 25, "
            "else chi-square with continuity correction)."
        )
    )
    b.append(_intervals_table(study))
    b.append(Heading(3, "Native top-5"))
    b.append(
        Table(
            ("Model", "Mapping", "Top-1 %", "Top-5 %"),
            tuple(
                (m.name, study.mapping(m.name, m.name), fmt(m.percent), fmt(m.top5_percent))
                for m in study.models
            ),
            name="native_top5",
        )
    )
    return b


def _intervals_table(study: Study) -> Table:
    rows = []
    for p in study.pairs:
        rows.append(
            (
                study.mapping(p.source, p.target),
                fmt(p.loss, "{:.2f}"),
                fmt_ci(p.loss_ci),
                pair_reading(p) or "n/a",
                fmt(p.top5_percent),
                fmt(None if p.agreement is None else 100 * p.agreement),
                fmt(p.mcnemar_b, "{:,}"),
                fmt(p.mcnemar_c, "{:,}"),
                fmt(p.mcnemar_statistic, "{:.3g}"),
                fmt_p(p.mcnemar_p),
                p.mcnemar_method or "n/a",
            )
        )
    header = (
        "Mapping",
        "Loss",
        "95% CI",
        "Reading",
        "Top-5 %",
        "Agreement %",
        "b",
        "c",
        "Statistic",
        "p",
        "Test",
    )
    return Table(header, tuple(rows), name="intervals")


def _label_free_blocks(study: Study) -> list:
    return [
        Para(LABEL_FREE_SENTENCE),
        Heading(2, "Agreement matrix (% of samples)"),
        matrix_table(study, "agreement", "{:.1f}", "—", "agreement_matrix"),
        Table(
            ("Description", "Mapping", "Agreement %"),
            tuple(
                (
                    f"{p.source} to {p.target}",
                    study.mapping(p.source, p.target),
                    fmt(None if p.agreement is None else 100 * p.agreement),
                )
                for p in study.pairs
            ),
            name="agreement",
        ),
    ]


def _figure_blocks(study: Study, formats: tuple[str, ...]) -> list:
    def _figure(png: str, alt: str) -> Image:
        stem = png.rsplit(".", 1)[0]
        return Image(png, alt, tuple(f"{stem}.{ext}" for ext in formats))

    b: list = [Heading(2, "Figures")]
    if study.labelled:
        b.append(
            _figure(
                FOREST_PNG,
                "Loss of each mapping A → B with its 95 % interval, ordered by loss "
                f"(open markers: interval contains 0, {NO_DIFFERENCE})",
            )
        )
        b.append(_figure(LOSS_PNG, "Loss matrix (points; rows: source A, columns: target B)"))
    b.append(_figure(AGREEMENT_PNG, "Agreement matrix (%; rows: source A, columns: target B)"))
    if has_cka(study):
        b.append(_figure(CKA_PNG, "Linear CKA matrix"))
    if study.labelled:
        b.append(Para(f"Table 1 as LaTeX (booktabs): {TABLE1_TEX}."))
    return b


def _provenance_blocks(study: Study) -> list:
    codes = study.codes
    b: list = [
        Heading(2, "Settings"),
        Table(("Setting", "Value"), _settings_items(study), name="settings"),
        Heading(2, "Provenance"),
        Table(
            ("Code", "Model", "File", "SHA-256", "Features", "Cut"),
            tuple(
                (
                    codes[m.name],
                    m.name,
                    m.path or "n/a",
                    m.sha256 or "n/a",
                    fmt(m.feature_dim, "{:,}"),
                    m.cut or "n/a",
                )
                for m in study.models
            ),
            name="models",
        ),
    ]
    if study.datasets:
        b.append(
            Table(
                ("Role", "Dataset", "Samples", "Fingerprint"),
                tuple(
                    (d.role, d.description, fmt(d.n, "{:,}"), d.fingerprint or "n/a")
                    for d in study.datasets
                ),
                name="datasets",
            )
        )
    b.extend(_map_files(study))
    return b


def _debiased_cka(study: Study) -> list:
    """The debiased CKA of each pair (unbiased HSIC), beside the biased matrix above."""
    rows, seen = [], set()
    for p in study.pairs:
        key = tuple(sorted((p.source, p.target)))
        if p.cka_debiased is None or key in seen:
            continue
        seen.add(key)
        rows.append((key[0], key[1], fmt(p.cka, "{:.3f}"), fmt(p.cka_debiased, "{:.3f}")))
    if not rows:
        return []
    return [Para("Debiased linear CKA (unbiased HSIC estimator, Song et al. 2012; Nguyen et "
                 "al. 2021): the biased estimate above grows towards 1 when there are few "
                 "samples for the feature widths; the debiased one does not."),
            Table(("Model", "Model", "CKA", "CKA (debiased)"), tuple(rows), name="cka_debiased")]


def _notes(study: Study) -> list:
    """What the run assumed, converted or warns about (one paragraph each)."""
    if not study.notes:
        return []
    return [Heading(2, "Notes"), *(Para(f"NOTE: {n}") for n in study.notes)]


def _map_files(study: Study) -> list:
    """The fitted maps (``maps/<A>__to__<B>.npz`` beside the report), ready for ``stitch``."""
    rows = tuple((p.source, p.target, _map_shown(p.map_path)) for p in study.pairs if p.map_path)
    if not rows:
        return []
    return [Heading(2, "Maps"),
            Para("Each fitted map M_{A→B}; `xnetmap stitch A.onnx B.onnx MAP -o AB.onnx` "
                 "turns one into a single ONNX model."),
            Table(("Source A", "Target B", "Map file"), rows, name="maps")]


def _map_shown(path: str) -> str:
    p = PurePath(path)
    return f"maps/{p.name}" if p.parent.name == "maps" else str(p)


def _setting(v) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, default=str)
