"""Thresholds for ``xnetmap check``: one frozen dataclass, built from a TOML file and flags.

A policy file looks like::

    # xnetmap-policy.toml
    [thresholds]
    min_agreement = 99.0      # % of val images where candidate and reference agree (top-1)
    max_acc_drop = 0.5        # points of top-1 accuracy the candidate may lose
    max_abs_diff = 0.05       # largest |output difference| over val (same output space)
    max_loss = 1.0            # points, stitched loss in each direction (map-based)
    min_map_agreement = 97.0  # % agreement of each stitched model with its target model
    min_cka = 0.9             # linear CKA between the two feature spaces

    [drift]                   # allowed change against a saved --baseline
    top1_agreement = 0.5
    accuracy_reference = 0.5
    accuracy_candidate = 0.5

Flags override the file. A metric without a threshold is reported, not gated.
Agreements, accuracies and losses are in percent / points, like the study reports.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..errors import InputError, UsageError

# Used when neither the policy file nor a flag gives any threshold.
DEFAULT_THRESHOLDS = {"min_agreement": 99.0, "max_acc_drop": 0.5, "max_loss": 1.0}
DEFAULT_DRIFT = 0.5
_NOT_THRESHOLDS = ("drift", "explicit")


@dataclass(frozen=True)
class CheckPolicy:
    """Gates of a check; ``None`` means "report only".

    Attributes
    ----------
    min_agreement : float or None
        Minimum top-1 agreement (%) between candidate and reference on val.
    max_acc_drop : float or None
        Maximum accuracy drop (points), reference minus candidate.
    max_abs_diff, max_mean_abs_diff : float or None
        Maximum / mean absolute output difference (same output space only).
    max_loss : float or None
        Maximum stitched loss (points) in each direction (map-based, needs train).
    min_map_agreement : float or None
        Minimum agreement (%) of each stitched model with its target's own predictions.
    min_cka : float or None
        Minimum linear CKA between the two feature spaces.
    drift : dict of str to float
        Allowed absolute change of each metric against a baseline (default
        ``DEFAULT_DRIFT`` for metrics not listed).
    explicit : tuple of str
        Thresholds the user asked for (policy file or flags), as opposed to
        :data:`DEFAULT_THRESHOLDS`. An explicit gate whose metric cannot be
        measured in a run fails instead of silently disappearing.
    """

    min_agreement: float | None = None
    max_acc_drop: float | None = None
    max_abs_diff: float | None = None
    max_mean_abs_diff: float | None = None
    max_loss: float | None = None
    min_map_agreement: float | None = None
    min_cka: float | None = None
    drift: dict = field(default_factory=dict)
    explicit: tuple = ()

    def thresholds(self) -> dict:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_THRESHOLDS
        }

    def drift_tolerance(self, metric: str) -> float:
        return float(self.drift.get(metric, DEFAULT_DRIFT))


def _read_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as err:
        raise InputError(f"policy file {path} does not exist") from err
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"policy file {path} is not valid TOML: {err}") from err


def load_policy(path: str | Path | None = None, **flags: float | None) -> CheckPolicy:
    """Merge a TOML policy file and flag values (flags win) into a :class:`CheckPolicy`.

    When neither gives any threshold, :data:`DEFAULT_THRESHOLDS` apply.
    """
    names = {f.name for f in fields(CheckPolicy)} - set(_NOT_THRESHOLDS)
    values: dict = {}
    drift: dict = {}
    if path is not None:
        data = _read_toml(Path(path))
        unknown = set(data) - {"thresholds", "drift"}
        if unknown:
            raise InputError(
                f"policy file {path}: unknown table(s) {sorted(unknown)}; "
                "use [thresholds] and [drift]"
            )
        for key, value in data.get("thresholds", {}).items():
            if key not in names:
                raise InputError(
                    f"policy file {path}: unknown threshold {key!r}; "
                    f"known: {', '.join(sorted(names))}"
                )
            values[key] = _number(value, f"{path}: thresholds.{key}")
        for key, value in data.get("drift", {}).items():
            drift[key] = _number(value, f"{path}: drift.{key}")
    for key, value in flags.items():
        if key not in names:
            raise UsageError(f"unknown threshold {key!r}")
        if value is not None:
            values[key] = _number(value, f"--{key.replace('_', '-')}")
    explicit = tuple(sorted(values))
    if not values:
        values = dict(DEFAULT_THRESHOLDS)
    return replace(CheckPolicy(), **values, drift=drift, explicit=explicit)


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where} must be a number, got {value!r}")
    return float(value)
