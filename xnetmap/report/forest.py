"""Forest plot: each ordered pair's loss with its 95 % interval, ordered by loss.

One row per pair ``A → B`` (full model names), largest loss at the top. A filled
marker is a measurable loss (red) or gain (blue); an open grey marker is a pair
whose interval contains 0 (no measurable difference). The numbers are written at
the right of each row. Built without pyplot; :mod:`xnetmap.report.figures` saves it.
"""

from __future__ import annotations

import math

from xnetmap.report.heatmap import text_width
from xnetmap.report.wording import GAIN, LOSS, NO_DIFFERENCE, pair_reading
from xnetmap.study.table import ARROW, Study, format_points

_STYLE = {
    LOSS: {"color": "#b2182b", "mfc": "#b2182b"},
    GAIN: {"color": "#2166ac", "mfc": "#2166ac"},
    NO_DIFFERENCE: {"color": "#555555", "mfc": "white"},
}


def forest_rows(study: Study) -> list:
    """Pairs with a finite loss, largest loss first (ties: the study's pair order)."""
    rows = [p for p in study.pairs if p.loss is not None and math.isfinite(p.loss)]
    return sorted(rows, key=lambda p: -p.loss)


def _num(x: float) -> str:
    return format_points(x).replace("-", "\u2212")  # a typographic minus, as on the axis


def _row_text(p) -> str:
    if p.loss_ci is None:
        return _num(p.loss)
    return f"{_num(p.loss)} [{_num(p.loss_ci[0])}, {_num(p.loss_ci[1])}]"


def forest_figure(study: Study, loss_range: float | None = None):
    """The forest plot of a labelled study as a matplotlib Figure.

    Parameters
    ----------
    study : Study
        Pairs without a loss are left out; a study with none raises ValueError.
    loss_range : float, optional
        The x axis spans at least [-loss_range, loss_range] points, so that plots
        of different studies line up; it widens when an interval reaches further.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    rows = forest_rows(study)
    if not rows:
        raise ValueError("a forest plot needs at least one pair with a loss")
    k = len(rows)
    height = max(0.34 * k + 1.6, 3.0)
    fig = Figure(figsize=(8.0, height), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.1, h_pad=0.1)  # inches of margin: no text at the edge
    ax = fig.add_subplot()
    extent = 0.0
    for y, p in enumerate(reversed(rows)):  # y = 0 at the bottom: the smallest loss
        style = _STYLE[pair_reading(p)]
        lo, hi = p.loss_ci if p.loss_ci is not None else (p.loss, p.loss)
        extent = max(extent, abs(lo), abs(hi), abs(p.loss))
        ax.errorbar(
            p.loss,
            y,
            xerr=[[p.loss - lo], [hi - p.loss]],
            fmt="o",
            color=style["color"],
            mfc=style["mfc"],
            mec=style["color"],
            ms=6,
            capsize=3,
            lw=1.4,
        )
    ax.axvline(0.0, color="black", lw=0.8, zorder=0)
    half = max(extent * 1.08, loss_range or 0.0, 0.5)
    ax.set_xlim(-half, half)
    ax.set_ylim(-0.7, k - 0.3)
    labels = [f"{p.source} {ARROW} {p.target}" for p in reversed(rows)]
    ax.set_yticks(range(k), labels=labels)
    trans = blended_transform_factory(ax.transAxes, ax.transData)
    numbers = [
        ax.text(1.03, y, _row_text(p), transform=trans, va="center", ha="left", fontsize=9)
        for y, p in enumerate(reversed(rows))
    ]
    ax.text(1.03, k - 0.3, "loss [95 % CI]", transform=trans, va="bottom", ha="left", fontsize=9)
    ax.set_xlabel("loss, points: Acc(C_B(F_B)) − Acc(C_B(M F_A))   (negative = gain)")
    ax.set_ylabel("source A → target B")
    ax.grid(axis="x", color="#e5e5e5", lw=0.8)
    ax.set_axisbelow(True)
    title = fig.suptitle("Loss of each mapping A → B with its 95 % bootstrap interval", fontsize=11)
    handles = [
        Line2D([], [], marker="o", ls="", color=_STYLE[r]["color"], mfc=_STYLE[r]["mfc"], label=r)
        for r in (LOSS, GAIN, NO_DIFFERENCE)
    ]
    legend = fig.legend(
        handles=handles, loc="outside lower center", ncols=3, frameon=False, fontsize=9
    )
    # the plot keeps a 4-inch axis however long the model names are: the figure grows instead
    left = text_width(fig, ax.get_yticklabels()) + 0.5
    width = left + 4.0 + text_width(fig, numbers) + 0.3
    width = max(width, text_width(fig, [legend, title]) + 0.5)
    fig.set_size_inches(width, height)
    return fig
