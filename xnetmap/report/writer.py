"""Write every report file of a study into one folder, each atomically."""

from __future__ import annotations

from pathlib import Path

from xnetmap.fsutil import atomic_write_bytes, atomic_write_text
from xnetmap.report.content import TABLE1_TEX, build_blocks
from xnetmap.report.csvreport import study_to_csv
from xnetmap.report.figures import DPI, FigureOptions, render_figures
from xnetmap.report.jsonreport import study_to_json
from xnetmap.report.latex import table1_latex
from xnetmap.report.render import to_html, to_markdown
from xnetmap.study.table import Study


def write_reports(
    study: Study,
    out_dir,
    *,
    loss_range: float | None = None,
    agreement_range: tuple[float, float] | None = None,
    cka_range: tuple[float, float] | None = None,
    formats: tuple[str, ...] = ("png", "svg", "pdf"),
) -> dict[str, Path]:
    """Write a study's reports and figures into ``out_dir``.

    Files: ``report.md``, ``report.json``, ``results.csv``, ``report.html`` (one
    self-contained page), ``table1.tex`` (labelled studies), and each figure as
    PNG, SVG and PDF: ``loss_forest``, ``loss`` (labelled studies), ``agreement``,
    ``cka`` (when measured). Re-running on the same study writes identical bytes.

    Parameters
    ----------
    study : Study
    out_dir : str or Path
        Created if missing; existing report files are replaced atomically.
    loss_range : float, optional
        Fix the loss colour range to [-loss_range, loss_range] points (and the
        forest plot's least x range), so that figures of several studies compare.
    agreement_range, cka_range : (float, float), optional
        Fix the agreement (percent) or CKA colour range; default: the data's range.
    formats : tuple of str
        Figure formats among ``png``, ``svg``, ``pdf``; PNG is always written (the
        HTML page embeds it). SVG and PDF cost about 1 s of CPU per four figures.

    Returns
    -------
    dict
        File name -> path written.

    Raises
    ------
    UsageError
        A range that is not positive / not LOW < HIGH, or an unknown format.
    """

    options = FigureOptions(loss_range, agreement_range, cka_range, tuple(formats))
    options.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(study, options.formats)
    figures = render_figures(study, options)
    written: dict[str, Path] = {}
    for name, data in figures.items():
        written[name] = atomic_write_bytes(out / name, data)
    if study.labelled:
        written[TABLE1_TEX] = atomic_write_text(out / TABLE1_TEX, table1_latex(study))
    written["report.md"] = atomic_write_text(out / "report.md", to_markdown(blocks))
    written["report.json"] = atomic_write_text(out / "report.json", study_to_json(study))
    written["results.csv"] = atomic_write_text(out / "results.csv", study_to_csv(study))
    pngs = {k: v for k, v in figures.items() if k.endswith(".png")}
    written["report.html"] = atomic_write_text(out / "report.html", to_html(blocks, pngs, dpi=DPI))
    return written
