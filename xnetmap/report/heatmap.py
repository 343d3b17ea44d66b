"""PNG heatmaps of N x N study matrices (loss, agreement, CKA), drawn with Pillow.

Rows are the source model A, columns the target model B; each cell is coloured
and carries its value as text; NaN cells (the diagonal of a loss matrix, or a
pair that was not run) are grey with a hyphen. The layout is fixed so the image
size depends only on N: ``(LEFT + N * CELL + RIGHT, TOP + N * CELL + BOTTOM)``.
"""

from __future__ import annotations

import io
import math

import numpy as np

CELL = 72
LEFT = 110
TOP = 64
RIGHT = 20
BOTTOM = 40

GREY = (225, 225, 225)
WHITE = (255, 255, 255)
RED = (178, 24, 43)  # loss (positive)
BLUE = (33, 102, 172)  # gain (negative)
NAVY = (8, 48, 107)  # high similarity


def heatmap_size(n: int) -> tuple[int, int]:
    """Pixel size (width, height) of a heatmap of an n x n matrix."""
    return LEFT + n * CELL + RIGHT, TOP + n * CELL + BOTTOM


def cell_box(i: int, j: int) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1) of row i, column j."""
    x0 = LEFT + j * CELL
    y0 = TOP + i * CELL
    return x0, y0, x0 + CELL - 1, y0 + CELL - 1


def _mix(c0, c1, t: float) -> tuple[int, int, int]:
    t = min(1.0, max(0.0, t))
    return tuple(int(round(a + (b - a) * t)) for a, b in zip(c0, c1, strict=True))


def cell_colour(value: float, scheme: str, vmax: float = 1.0) -> tuple[int, int, int]:
    """Colour of a cell.

    ``scheme="diverging"``: white at 0, red for positive (loss), blue for negative
    (gain), full colour at ``|value| = vmax``. ``scheme="sequential"``: white at 0
    to navy at 1 (values clipped to [0, 1]).
    """
    if value is None or not math.isfinite(value):
        return GREY
    if scheme == "diverging":
        return _mix(WHITE, RED if value > 0 else BLUE, abs(value) / vmax if vmax > 0 else 0.0)
    if scheme == "sequential":
        return _mix(WHITE, NAVY, value)
    raise ValueError(f"unknown colour scheme {scheme!r}; use 'diverging' or 'sequential'")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font, fixed size
        return ImageFont.load_default()


def _centered(draw, xy, text, font, fill) -> None:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    cx, cy = xy
    draw.text((cx - (x1 - x0) / 2 - x0, cy - (y1 - y0) / 2 - y0), text, font=font, fill=fill)


def render_heatmap(
    M,
    labels: list[str],
    *,
    title: str,
    scheme: str,
    fmt: str = "{:.1f}",
    footer: str = "rows: source A, columns: target B",
) -> bytes:
    """Draw a heatmap of an n x n matrix and return it as PNG bytes.

    Parameters
    ----------
    M : ndarray of shape (n, n)
        NaN cells are drawn grey with a dash.
    labels : list of str
        n axis labels (short model codes), used for rows and columns.
    title : str
    scheme : {"diverging", "sequential"}
        See :func:`cell_colour`; a diverging scale is symmetric about 0.
    fmt : str
        Format of the value written in each cell.
    footer : str
    """
    from PIL import Image, ImageDraw

    M = np.asarray(M, dtype=np.float64)
    n = len(labels)
    if M.shape != (n, n):
        raise ValueError(f"heatmap matrix has shape {M.shape}; expected ({n}, {n}) for {labels}")
    finite = M[np.isfinite(M)]
    vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    img = Image.new("RGB", heatmap_size(n), WHITE)
    draw = ImageDraw.Draw(img)
    f_title, f_cell, f_small = _font(16), _font(14), _font(12)
    draw.text((10, 8), title, font=f_title, fill=(0, 0, 0))
    for k, lab in enumerate(labels):
        x0, y0, x1, y1 = cell_box(0, k)
        _centered(draw, ((x0 + x1) / 2, TOP - 14), lab, f_cell, (0, 0, 0))
        x0, y0, x1, y1 = cell_box(k, 0)
        _centered(draw, (LEFT / 2, (y0 + y1) / 2), lab, f_cell, (0, 0, 0))
    for i in range(n):
        for j in range(n):
            v = float(M[i, j])
            colour = cell_colour(v, scheme, vmax)
            box = cell_box(i, j)
            draw.rectangle(box, fill=colour, outline=(255, 255, 255))
            text = fmt.format(v) if math.isfinite(v) else "-"
            lum = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
            ink = (255, 255, 255) if lum < 128 else (0, 0, 0)
            _centered(draw, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), text, f_cell, ink)
    w, h = img.size
    draw.text((10, h - BOTTOM + 12), footer, font=f_small, fill=(80, 80, 80))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
