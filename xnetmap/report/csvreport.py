"""``results.csv``: one row per native model and per ordered pair, plain numbers.

Columns: kind (``native`` / ``pair``), source, target, mapping, n, correct,
percent, loss, loss_ci_low, loss_ci_high, top5_correct, top5_percent,
agreement, mcnemar_b, mcnemar_c, mcnemar_statistic, mcnemar_p, mcnemar_method,
fit_cosine, fit_r2, cka. Missing values are empty; floats keep full precision.
"""

from __future__ import annotations

import csv
import io
import math

from xnetmap.study.table import Study

COLUMNS = (
    "kind",
    "source",
    "target",
    "mapping",
    "n",
    "correct",
    "percent",
    "loss",
    "loss_ci_low",
    "loss_ci_high",
    "top5_correct",
    "top5_percent",
    "agreement",
    "mcnemar_b",
    "mcnemar_c",
    "mcnemar_statistic",
    "mcnemar_p",
    "mcnemar_method",
    "fit_cosine",
    "fit_r2",
    "cka",
)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    return str(v)


def study_to_csv(study: Study) -> str:
    """CSV text of a study (header + rows, ``\\n`` line ends)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for m in study.models:
        row = dict.fromkeys(COLUMNS)
        row.update(
            kind="native",
            source=m.name,
            target=m.name,
            mapping=study.mapping(m.name, m.name),
            n=m.n,
            correct=m.correct,
            percent=m.percent,
            top5_correct=m.top5_correct,
            top5_percent=m.top5_percent,
            agreement=1.0,
        )
        w.writerow([_cell(row[c]) for c in COLUMNS])
    for p in study.pairs:
        lo, hi = p.loss_ci if p.loss_ci is not None else (None, None)
        row = dict.fromkeys(COLUMNS)
        row.update(
            kind="pair",
            source=p.source,
            target=p.target,
            mapping=study.mapping(p.source, p.target),
            n=p.n,
            correct=p.correct,
            percent=p.percent,
            loss=p.loss,
            loss_ci_low=lo,
            loss_ci_high=hi,
            top5_correct=p.top5_correct,
            top5_percent=p.top5_percent,
            agreement=p.agreement,
            mcnemar_b=p.mcnemar_b,
            mcnemar_c=p.mcnemar_c,
            mcnemar_statistic=p.mcnemar_statistic,
            mcnemar_p=p.mcnemar_p,
            mcnemar_method=p.mcnemar_method,
            fit_cosine=p.fit_cosine,
            fit_r2=p.fit_r2,
            cka=p.cka,
        )
        w.writerow([_cell(row[c]) for c in COLUMNS])
    return buf.getvalue()
