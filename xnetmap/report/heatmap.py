"""Annotated heatmaps of N x N study matrices (loss, agreement, CKA), drawn with matplotlib.

Rows are the source model A, columns the target model B, both labelled with the
models' full names; each cell carries its value; cells with no value (the
diagonal of a loss or agreement matrix, a pair that was not run) are grey with a
dash. A colour bar shows the scale. Loss uses a diverging map centred on 0 with a
symmetric range (red = loss, blue = gain); agreement and CKA use a sequential map
whose range follows the off-diagonal data unless the caller fixes it.

Functions here build :class:`matplotlib.figure.Figure` objects without pyplot, so
nothing is registered globally; :mod:`xnetmap.report.figures` saves them.
"""

from __future__ import annotations

import math

import numpy as np

MISSING = "#dcdcdc"  # cells with no value
DIVERGING = "RdBu_r"  # negative (gain) blue, 0 white, positive (loss) red
SEQUENTIAL = "viridis"


def symmetric_limit(values, fixed: float | None = None) -> float:
    """Half-width r of a colour range [-r, r] centred on 0.

    ``fixed`` wins when given; otherwise the largest |value|, rounded up to a
    tick-friendly number (1, 2, 2.5, 5 x 10^k), so that 1.3 gives 1.5 or 2.
    """
    if fixed is not None:
        return float(fixed)
    from matplotlib.ticker import MaxNLocator

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    top = float(np.max(np.abs(v))) if v.size else 0.0
    if top <= 0:
        return 1.0
    return float(np.max(MaxNLocator(nbins=4, symmetric=True).tick_values(-top, top)))


def data_range(values, fixed: tuple[float, float] | None = None) -> tuple[float, float]:
    """(lo, hi) of the finite values, padded when they are all equal; ``fixed`` wins."""
    if fixed is not None:
        return float(fixed[0]), float(fixed[1])
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-9:
        pad = max(abs(hi) * 0.01, 1e-3)
        lo, hi = lo - pad, hi + pad
    return lo, hi


def text_width(fig, artists) -> float:
    """Widest rendered width, in inches, of some artists of ``fig`` (texts, a legend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    shown = [a for a in artists if not hasattr(a, "get_text") or a.get_text()]
    widths = [a.get_window_extent(renderer).width for a in shown]
    return max(widths, default=0.0) / fig.dpi


def _ink(rgba) -> str:
    """Black or white text, whichever reads better on a cell of colour ``rgba``."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _extend(M, vmin: float, vmax: float) -> str:
    finite = M[np.isfinite(M)]
    low = bool(finite.size and finite.min() < vmin)
    high = bool(finite.size and finite.max() > vmax)
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (low, high), "neither"
    )


def _annotate(ax, M, im, fmt: str, diagonal_text: str) -> None:
    """Write each cell's value (typographic minus), in black or white for contrast."""
    n = len(M)
    size = 10 if n <= 5 else (8 if n <= 8 else 6)
    for i in range(n):
        for j in range(n):
            v = M[i, j]
            if i == j:
                text = diagonal_text
            else:
                text = fmt.format(v).replace("-", "\u2212") if math.isfinite(v) else "—"
            colour = _ink(im.cmap(im.norm(v))) if i != j and math.isfinite(v) else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=colour)


def heatmap_figure(
    M,
    names: list[str],
    *,
    title: str,
    cbar_label: str,
    cmap: str,
    vmin: float,
    vmax: float,
    fmt: str = "{:.1f}",
    diagonal_text: str = "—",
):
    """An annotated heatmap of an (n, n) matrix as a matplotlib Figure.

    Parameters
    ----------
    M : array of shape (n, n)
        Rows = source A, columns = target B; NaN = no value (grey cell).
    names : list of str
        Full model names, in axis order.
    title, cbar_label : str
    cmap : str
        A matplotlib colour map name.
    vmin, vmax : float
        Colour range; values outside it take the end colours (the colour bar
        then shows an arrow) and keep their true number in the cell.
    fmt : str
        Format of each cell's number.
    diagonal_text : str
        Text of the diagonal cells, which are always grey (not a measured pair).
    """
    import matplotlib
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    M = np.asarray(M, dtype=np.float64)
    n = len(names)
    if M.shape != (n, n):
        raise ValueError(f"heatmap matrix has shape {M.shape}; expected ({n}, {n}) for {names}")
    shown = M.copy()
    np.fill_diagonal(shown, np.nan)
    cm = matplotlib.colormaps[cmap].with_extremes(bad=MISSING)
    norm = Normalize(vmin=vmin, vmax=vmax)
    cell = 0.75 if n <= 6 else 0.55  # inches
    fig = Figure(figsize=(cell * n + 3, cell * n + 2), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.1, h_pad=0.1)  # inches of margin: no text at the edge
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(shown), cmap=cm, norm=norm, aspect="equal")
    _annotate(ax, M, im, fmt, diagonal_text)
    ax.set_xticks(range(n), labels=names, rotation=35, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("target B (classifier)")
    ax.set_ylabel("source A (mapped features)")
    ax.set_title(title, fontsize=11)
    ax.tick_params(length=0)
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    cbar = fig.colorbar(im, ax=ax, shrink=0.8, extend=_extend(shown, vmin, vmax))
    cbar.set_label(cbar_label)
    # cells keep their size however long the names are: the figure grows instead
    cells = cell * n
    names_w = text_width(fig, ax.get_yticklabels())
    names_h = text_width(fig, ax.get_xticklabels()) * math.sin(math.radians(35))
    width = max(names_w + cells + 2.5, text_width(fig, [ax.title]) + 0.5)
    fig.set_size_inches(width, max(names_h + cells + 1.1, cells + 1.7))
    return fig
