"""Render the library's progress events on the terminal (the CLI layer; library code never prints).

The event protocol library code follows (duck-typed, so a plain function still works):

``progress(message)``
    A step starts; the step before it, if still open, is finished. A message
    ending in ``(cached)`` is a step served from the cache (finished at once).
``progress.advance(done, total)``, when the callback has it
    The open step counts ``done`` of ``total`` items (extract's callback).
``progress.finish(note="")``, when the callback has it
    The open step is finished now; ``note`` (e.g. ``"(cached)"``) is appended.

On a terminal every step is a rich progress bar with its rate and ETA; off a
terminal (CI logs) one line per finished step with its wall time. ``close``
finishes the last step and prints the total time.
"""

from __future__ import annotations

import sys
import time
from typing import Any

CACHED = "(cached)"


class StepProgress:
    """Progress callback for run-study, check and demo; use as a context manager.

    Parameters
    ----------
    enabled : bool
        False (``--quiet``): every event is ignored, nothing is printed.
    live : bool, optional
        Rich bars (default: stderr is a terminal). False: plain lines.
    stream : file, optional
        Where plain lines go (default ``sys.stderr``).
    """

    def __init__(self, enabled: bool = True, live: bool | None = None, stream: Any = None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.live = bool(enabled and (self.stream.isatty() if live is None else live))
        self._bars = None
        self._open: dict | None = None
        self._t_start = time.perf_counter()

    # ---- the event protocol -------------------------------------------------
    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        self.finish()
        cached = message.rstrip().endswith(CACHED)
        label = message.rstrip()[: -len(CACHED)].rstrip() if cached else message
        self._open = {"label": label, "t0": time.perf_counter(), "task": None}
        if self._bars is not None:
            self._open["task"] = self._bars.add_task(label, total=None)
        if cached:
            self.finish(CACHED)

    def advance(self, done: int, total: int) -> None:
        """The open step has done ``done`` of ``total`` items."""
        if self._open is not None and self._bars is not None:
            self._bars.update(self._open["task"], completed=done, total=total, counted=True)

    def finish(self, note: str = "") -> None:
        """Finish the open step (``note`` e.g. ``"(cached)"``)."""
        step, self._open = self._open, None
        if step is None:
            return
        secs = time.perf_counter() - step["t0"]
        label = f"{step['label']} {note}".rstrip()
        if self._bars is not None:
            task = self._bars.tasks[[t.id for t in self._bars.tasks].index(step["task"])]
            total = task.total if task.total is not None else 1
            self._bars.update(step["task"], description=label, total=total, completed=total)
            self._bars.stop_task(step["task"])
        else:
            print(f"· {label}  {secs:.1f} s", file=self.stream, flush=True)

    # ---- lifetime -------------------------------------------------------------
    def __enter__(self) -> StepProgress:
        self._t_start = time.perf_counter()
        if self.live:
            self._bars = _rich_bars()
            self._bars.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)

    def close(self, ok: bool = True) -> None:
        """Finish the last step, stop the bars, print the total time (when it went well)."""
        if not self.enabled:
            return
        self.finish()
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        if ok:
            total = time.perf_counter() - self._t_start
            print(f"done in {total:.1f} s", file=self.stream, flush=True)


def _rich_bars():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class Counted(ProgressColumn):
        """Show a column only on steps that count items (extraction): bar, M/N, rate, ETA."""

        def __init__(self, column):
            super().__init__()
            self.column = column

        def render(self, task):
            return self.column.render(task) if task.fields.get("counted") else ""

    class Rate(TextColumn):
        def render(self, task):  # images per second of the counted steps
            speed = task.finished_speed or task.speed
            return "" if speed is None else f"{speed:,.0f} img/s"

    return Progress(
        SpinnerColumn(finished_text="✓"), TextColumn("{task.description}"),
        Counted(BarColumn()), Counted(MofNCompleteColumn()), Counted(Rate("")),
        TimeElapsedColumn(), Counted(TextColumn("ETA")), Counted(TimeRemainingColumn()),
        console=Console(stderr=True),
    )
