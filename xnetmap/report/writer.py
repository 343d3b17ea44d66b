"""Write every report file of a study into one folder, each atomically."""

from __future__ import annotations

from pathlib import Path

from xnetmap.fsutil import atomic_write_bytes, atomic_write_text
from xnetmap.report.content import AGREEMENT_PNG, CKA_PNG, LOSS_PNG, build_blocks, has_cka
from xnetmap.report.csvreport import study_to_csv
from xnetmap.report.heatmap import render_heatmap
from xnetmap.report.jsonreport import study_to_json
from xnetmap.report.render import to_html, to_markdown
from xnetmap.study.table import Study


def render_heatmaps(study: Study) -> dict[str, bytes]:
    """PNG bytes of the study's heatmaps, keyed by file name."""
    labels = [study.codes[n] for n in study.names]
    out = {}
    if study.labelled:
        out[LOSS_PNG] = render_heatmap(
            study.matrix("loss"),
            labels,
            title="Loss (points; negative = gain)",
            scheme="diverging",
            fmt="{:.1f}",
        )
    out[AGREEMENT_PNG] = render_heatmap(
        study.matrix("agreement"),
        labels,
        title="Agreement with B's own labels",
        scheme="sequential",
        fmt="{:.1%}",
    )
    if has_cka(study):
        out[CKA_PNG] = render_heatmap(
            study.matrix("cka", diagonal=1.0),
            labels,
            title="Linear CKA",
            scheme="sequential",
            fmt="{:.2f}",
        )
    return out


def write_reports(study: Study, out_dir) -> dict[str, Path]:
    """Write ``report.md``, ``report.json``, ``results.csv``, ``report.html`` and PNG heatmaps.

    Parameters
    ----------
    study : Study
    out_dir : str or Path
        Created if missing; existing report files are replaced atomically.

    Returns
    -------
    dict
        File name -> path written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(study)
    images = render_heatmaps(study)
    written: dict[str, Path] = {}
    for name, data in images.items():
        written[name] = atomic_write_bytes(out / name, data)
    written["report.md"] = atomic_write_text(out / "report.md", to_markdown(blocks))
    written["report.json"] = atomic_write_text(out / "report.json", study_to_json(study))
    written["results.csv"] = atomic_write_text(out / "results.csv", study_to_csv(study))
    written["report.html"] = atomic_write_text(out / "report.html", to_html(blocks, images))
    return written
