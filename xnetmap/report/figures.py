"""A study's figures as PNG (for the HTML page), SVG and PDF (for papers), byte-stable.

matplotlib is imported lazily and used without pyplot: figures are plain
:class:`~matplotlib.figure.Figure` objects saved through the Agg canvas, and every
rcParam set here lives in an :func:`matplotlib.rc_context` that starts from
matplotlib's defaults (so a user's matplotlibrc neither changes the figures nor
is changed by them). Re-running on the same study writes identical bytes: the SVG
hash salt is fixed and the SVG/PDF creation dates are left out.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

from xnetmap.errors import UsageError
from xnetmap.report.content import AGREEMENT_PNG, CKA_PNG, FOREST_PNG, LOSS_PNG, has_cka
from xnetmap.report.forest import forest_figure
from xnetmap.report.heatmap import (
    DIVERGING,
    SEQUENTIAL,
    data_range,
    heatmap_figure,
    symmetric_limit,
)
from xnetmap.study.table import Study

FORMATS = ("png", "svg", "pdf")
DPI = 150

_RC = {
    "svg.hashsalt": "xnetmap",
    "svg.fonttype": "path",
    "pdf.fonttype": 42,  # TrueType: text stays text in the PDF (journals ask for it)
    "font.family": "DejaVu Sans",
    "font.size": 10,
}
_METADATA = {
    "png": {"Software": None},
    "svg": {"Date": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Producer": None},
}


@dataclass(frozen=True)
class FigureOptions:
    """Colour ranges of a study's figures.

    Attributes
    ----------
    loss_range : float or None
        Half-width r (points) of the loss colour range [-r, r], centred on 0, and
        the least half-width of the forest plot's axis. None: from the data.
        Fix it to compare figures of different studies.
    agreement_range : (float, float) or None
        Agreement colour range in percent; None: the off-diagonal data's range.
    cka_range : (float, float) or None
        CKA colour range; None: the off-diagonal data's range.
    formats : tuple of str
        File formats written; ``"png"`` is always included (the HTML page embeds it).
    """

    loss_range: float | None = None
    agreement_range: tuple[float, float] | None = None
    cka_range: tuple[float, float] | None = None
    formats: tuple[str, ...] = FORMATS

    def validate(self) -> None:
        """Raise UsageError for a range that is empty, reversed or not finite."""
        r = self.loss_range
        if r is not None and not (isinstance(r, (int, float)) and math.isfinite(r) and r > 0):
            raise UsageError(f"loss range must be a positive number of points; got {r!r}")
        for what, rng in (("agreement", self.agreement_range), ("CKA", self.cka_range)):
            if rng is None:
                continue
            lo, hi = rng
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise UsageError(f"{what} range must be two finite numbers LOW < HIGH; got {rng!r}")
        unknown = set(self.formats) - set(FORMATS)
        if unknown:
            raise UsageError(f"unknown figure format(s) {sorted(unknown)}; use {list(FORMATS)}")


def figure_bytes(fig, fmt: str) -> bytes:
    """Save a Figure as ``png``, ``svg`` or ``pdf`` bytes, cropped to its content."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(
        buf, format=fmt, dpi=DPI, bbox_inches="tight", pad_inches=0.05, metadata=_METADATA[fmt]
    )
    return buf.getvalue()


def study_figures(study: Study, options: FigureOptions) -> dict:
    """The study's figures as matplotlib Figures, keyed by their PNG file name.

    Must run inside :func:`figure_context` so that the fonts and sizes are the fixed ones.
    """

    names = study.names
    figs = {}
    if study.labelled and any(p.loss is not None for p in study.pairs):
        L = study.matrix("loss")
        r = symmetric_limit(L, options.loss_range)
        figs[LOSS_PNG] = heatmap_figure(
            L, names, title="Loss of A → B (points; negative = gain)",
            cbar_label="loss, points", cmap=DIVERGING, vmin=-r, vmax=r,
        )  # fmt: skip
        figs[FOREST_PNG] = forest_figure(study, options.loss_range)
    A = 100.0 * study.matrix("agreement")
    lo, hi = data_range(A, options.agreement_range)
    figs[AGREEMENT_PNG] = heatmap_figure(
        A, names, title="Agreement of C_B(M F_A) with C_B(F_B) (%)",
        cbar_label="agreement, % of samples", cmap=SEQUENTIAL, vmin=lo, vmax=hi,
    )  # fmt: skip
    if has_cka(study):
        K = study.matrix("cka")
        lo, hi = data_range(K, options.cka_range)
        figs[CKA_PNG] = heatmap_figure(
            K, names, title="Linear CKA of the validation features",
            cbar_label="linear CKA", cmap=SEQUENTIAL, vmin=lo, vmax=hi,
            fmt="{:.3f}", diagonal_text="1",
        )  # fmt: skip
    return figs


@contextlib.contextmanager
def figure_context():
    """An rc_context: matplotlib's defaults plus xnetmap's fixed settings, restored on exit."""
    import matplotlib

    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_RC)
        yield


def render_figures(study: Study, options: FigureOptions | None = None) -> dict[str, bytes]:
    """Every figure file of a study: file name -> bytes (``loss.png``, ``loss.svg``, ...)."""
    options = options or FigureOptions()
    options.validate()
    formats = ("png", *(f for f in options.formats if f != "png"))
    out: dict[str, bytes] = {}
    with figure_context():
        for png_name, fig in study_figures(study, options).items():
            stem = png_name.rsplit(".", 1)[0]
            for fmt in formats:
                out[f"{stem}.{fmt}"] = figure_bytes(fig, fmt)
    return out
