"""``report.json``: a study as versioned JSON (schema ``xnetmap.study/1``).

Structure (numbers are JSON numbers; a value that could not be measured is
``null``; percentages, losses and intervals are in points, 0..100;
agreement, cosine, R² and CKA are fractions)::

    {
      "schema": "xnetmap.study/1",
      "xnetmap_version": "0.1.0",
      "created": "2026-11-25T10:00:00+00:00",      # ISO-8601 UTC
      "labelled": true,                            # false: label-free agreement only
      "head": "native" | "probe",
      "settings": {...},                           # solver, device, bootstrap... verbatim
      "notes": [str],                              # assumptions, conversions, warnings
      "datasets": [{"role": "train" | "val", "description": str,
                    "fingerprint": str, "n": int | null}],
      "models": [{"name": str, "code": "I", "path": str, "sha256": str,
                  "feature_dim": int | null, "cut": str, "n": int,
                  "correct": int | null, "percent": float | null,
                  "top5_correct": int | null, "top5_percent": float | null}],
      "pairs": [{"source": str, "target": str, "mapping": "I → R", "n": int,
                 "correct": int | null, "percent": float | null,
                 "native_correct": int | null,         # the target's own count
                 "loss": float | null,                 # Acc(C_B(F_B)) - Acc(C_B(M F_A))
                 "loss_ci": [low, high] | null,        # 95 % paired bootstrap
                 "top5_correct": int | null, "top5_percent": float | null,
                 "agreement": float | null,
                 "mcnemar": {"b": int, "c": int, "statistic": float,
                             "p_value": float, "method": "exact" | "chi2-cc"} | null,
                 "fit": {"cosine": float | null, "r2": float | null},
                 "cka": float | null, "cka_debiased": float | null, "map_path": str}],
      "matrices": {"models": [names...],          # axis order; rows = source A
                   "loss": [[...]] | null,         # diagonal null
                   "agreement": [[...]],           # diagonal null
                   "cka": [[...]] | null},         # diagonal 1.0
      "table1": [{"description": str, "mapping": str, "correct": int,
                  "percent": float, "loss": float | null}]   # [] when label-free
    }
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from xnetmap.errors import InputError
from xnetmap.study.table import DatasetInfo, ModelResult, PairResult, Study, table1_rows

SCHEMA = "xnetmap.study/1"


def _num(x):
    if x is None:
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _matrix(study: Study, attribute: str, diagonal):
    M = study.matrix(attribute)
    out = []
    for i, row in enumerate(M):
        out.append([diagonal if i == j else _num(float(v)) for j, v in enumerate(row)])
    return out


def _model_dict(m, code: str) -> dict:
    return {
        "name": m.name, "code": code, "path": m.path, "sha256": m.sha256,
        "feature_dim": m.feature_dim, "cut": m.cut, "n": m.n, "correct": m.correct,
        "percent": _num(m.percent), "top5_correct": m.top5_correct,
        "top5_percent": _num(m.top5_percent),
    }


def _pair_dict(p, mapping: str) -> dict:
    mc = None
    if p.mcnemar_b is not None:
        mc = {"b": p.mcnemar_b, "c": p.mcnemar_c, "statistic": _num(p.mcnemar_statistic),
              "p_value": _num(p.mcnemar_p), "method": p.mcnemar_method}
    return {
        "source": p.source, "target": p.target, "mapping": mapping, "n": p.n,
        "correct": p.correct, "percent": _num(p.percent), "native_correct": p.native_correct,
        "loss": _num(p.loss),
        "loss_ci": None if p.loss_ci is None else [_num(v) for v in p.loss_ci],
        "top5_correct": p.top5_correct, "top5_percent": _num(p.top5_percent),
        "agreement": _num(p.agreement), "mcnemar": mc,
        "fit": {"cosine": _num(p.fit_cosine), "r2": _num(p.fit_r2)},
        "cka": _num(p.cka), "cka_debiased": _num(p.cka_debiased), "map_path": p.map_path,
    }


def study_to_dict(study: Study) -> dict:
    """The JSON-able form of a study (see the module docstring for the structure)."""
    has_cka = any(p.cka is not None for p in study.pairs)
    table1 = []
    if study.labelled:
        table1 = [{"description": r.description, "mapping": r.mapping, "correct": r.correct,
                   "percent": _num(r.percent), "loss": _num(r.loss)}
                  for r in table1_rows(study)]
    return {
        "schema": SCHEMA,
        "xnetmap_version": study.xnetmap_version,
        "created": study.created,
        "labelled": study.labelled,
        "head": study.head,
        "settings": study.settings,
        "notes": list(study.notes),
        "datasets": [
            {"role": d.role, "description": d.description, "fingerprint": d.fingerprint, "n": d.n}
            for d in study.datasets
        ],
        "models": [_model_dict(m, study.codes[m.name]) for m in study.models],
        "pairs": [_pair_dict(p, study.mapping(p.source, p.target)) for p in study.pairs],
        "matrices": {
            "models": study.names,
            "loss": _matrix(study, "loss", None) if study.labelled else None,
            "agreement": _matrix(study, "agreement", None),
            "cka": _matrix(study, "cka", 1.0) if has_cka else None,
        },
        "table1": table1,
    }


def study_to_json(study: Study) -> str:
    """``report.json`` text (strict JSON: no NaN, UTF-8, trailing newline)."""
    return (
        json.dumps(study_to_dict(study), indent=2, ensure_ascii=False, allow_nan=False, default=str)
        + "\n"
    )


def study_from_dict(d: dict) -> Study:
    """Rebuild a :class:`Study` from :func:`study_to_dict`'s output (e.g. to re-render reports).

    Raises InputError when the schema is missing or not ``xnetmap.study/1``.
    """
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        found = d.get("schema") if isinstance(d, dict) else type(d).__name__
        raise InputError(f"not an xnetmap study report: schema is {found!r}, expected {SCHEMA!r}")
    models = [
        ModelResult(
            name=m["name"],
            n=m["n"],
            correct=m.get("correct"),
            top5_correct=m.get("top5_correct"),
            sha256=m.get("sha256", ""),
            feature_dim=m.get("feature_dim"),
            path=m.get("path", ""),
            cut=m.get("cut", ""),
        )
        for m in d["models"]
    ]
    pairs = []
    for p in d["pairs"]:
        mc = p.get("mcnemar") or {}
        fit = p.get("fit") or {}
        ci = p.get("loss_ci")
        pairs.append(
            PairResult(
                source=p["source"],
                target=p["target"],
                n=p["n"],
                correct=p.get("correct"),
                top5_correct=p.get("top5_correct"),
                native_correct=p.get("native_correct"),
                loss=p.get("loss"),
                loss_ci=None if ci is None else (ci[0], ci[1]),
                agreement=p.get("agreement"),
                mcnemar_b=mc.get("b"),
                mcnemar_c=mc.get("c"),
                mcnemar_statistic=mc.get("statistic"),
                mcnemar_p=mc.get("p_value"),
                mcnemar_method=mc.get("method"),
                fit_cosine=fit.get("cosine"),
                fit_r2=fit.get("r2"),
                cka=p.get("cka"),
                map_path=p.get("map_path", ""),
                cka_debiased=p.get("cka_debiased"),
            )
        )
    return Study(
        models,
        pairs,
        labelled=d["labelled"],
        head=d.get("head", "native"),
        datasets=[
            DatasetInfo(x["role"], x["description"], x.get("fingerprint", ""), x.get("n"))
            for x in d.get("datasets", [])
        ],
        settings=d.get("settings", {}),
        notes=list(d.get("notes", [])),
        xnetmap_version=d.get("xnetmap_version", ""),
        created=d.get("created", ""),
    )


def load_report(path) -> Study:
    """Read ``report.json`` back into a :class:`Study`."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such report file") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: not a readable JSON report ({exc})") from None
    return study_from_dict(d)
