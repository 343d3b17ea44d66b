"""Fixed-width text for the terminal: Table 1 and N x N matrices (as ``xnetmap demo`` prints)."""

from __future__ import annotations

import math

from xnetmap.report.content import LABEL_FREE_SENTENCE
from xnetmap.study.table import TABLE1_HEADER, Study, table1_rows


def _grid(header, rows, right: set[int]) -> str:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]

    def line(cells) -> str:
        out = []
        for i, c in enumerate(cells):
            out.append(str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def format_table1(study: Study) -> str:
    """The paper's Table 1 as fixed-width text.

    For a label-free study, the plain sentence saying so and the agreement matrix instead.
    """
    if not study.labelled:
        return LABEL_FREE_SENTENCE + "\n\n" + format_matrix(study, "agreement")
    rows = [r.cells() for r in table1_rows(study)]
    return _grid(TABLE1_HEADER, rows, right={2, 3, 4})


_TITLES = {
    "loss": ("Loss (points; rows: source A, columns: target B; negative = gain)", "{:.1f}", 1.0),
    "agreement": ("Agreement (% of samples; rows: source A, columns: target B)", "{:.1f}", 100.0),
    "cka": ("Linear CKA of validation features", "{:.3f}", 1.0),
}


def format_matrix(study: Study, attribute: str = "loss") -> str:
    """An N x N pair attribute (``loss``, ``agreement``, ``cka``) as fixed-width text."""
    title, spec, scale = _TITLES[attribute]
    codes = study.codes
    M = study.matrix(attribute, diagonal=1.0 if attribute == "cka" else math.nan)
    header = ("", *(codes[n] for n in study.names))
    rows = []
    for i, a in enumerate(study.names):
        cells = [spec.format(v * scale) if math.isfinite(v) else "—" for v in M[i]]
        rows.append((f"{codes[a]} {a}", *cells))
    return title + "\n" + _grid(header, rows, right=set(range(1, len(header))))
