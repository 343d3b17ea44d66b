"""How a report reads a loss: gain, loss, or no measurable difference (from its 95 % interval)."""

from __future__ import annotations

import math

GAIN = "gain"
LOSS = "loss"
NO_DIFFERENCE = "no measurable difference"


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def loss_reading(loss, ci=None) -> str:
    """``"gain"``, ``"loss"`` or ``"no measurable difference"``; ``""`` when there is no loss.

    Parameters
    ----------
    loss : float or None
        Loss in points (negative = gain).
    ci : (float, float) or None
        Its 95 % interval. An interval that contains 0 (ends included) reads as
        ``"no measurable difference"`` whatever the sign of the point estimate.
        Without an interval the sign decides, and an exact 0 is no difference.
    """
    if not _finite(loss):
        return ""
    if ci is not None and _finite(ci[0]) and _finite(ci[1]):
        lo, hi = min(ci), max(ci)
        if lo <= 0.0 <= hi:
            return NO_DIFFERENCE
        return LOSS if lo > 0 else GAIN
    if loss == 0:
        return NO_DIFFERENCE
    return LOSS if loss > 0 else GAIN


def pair_reading(pair) -> str:
    """:func:`loss_reading` of a :class:`~xnetmap.study.table.PairResult`."""
    return loss_reading(pair.loss, pair.loss_ci)
