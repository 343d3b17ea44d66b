"""The step renderer: one line per finished step off a terminal, (cached), total, --quiet."""

from __future__ import annotations

import io
import re

from xnetmap.progress import StepProgress


def _plain() -> tuple[StepProgress, io.StringIO]:
    out = io.StringIO()
    return StepProgress(stream=out), out


def test_plain_lines_one_per_finished_step_then_total():
    progress, out = _plain()
    with progress:
        progress("a: split (pooled)")
        progress("a: features of val (10 images)")
        progress.advance(5, 10)
        progress.advance(10, 10)
        progress("b: features of val (10 images)")
        progress.finish("(cached)")
        progress("a → b: fit map (gd)")
    lines = out.getvalue().splitlines()
    assert [re.sub(r"  \d+\.\d s$", "", ln) for ln in lines[:-1]] == [
        "· a: split (pooled)",
        "· a: features of val (10 images)",
        "· b: features of val (10 images) (cached)",
        "· a → b: fit map (gd)",
    ]
    assert all(re.search(r"  \d+\.\d s$", ln) for ln in lines[:-1])
    assert re.fullmatch(r"done in \d+\.\d s", lines[-1])


def test_a_message_ending_in_cached_is_finished_at_once():
    progress, out = _plain()
    with progress:
        progress("a: probe (cached)")
        assert out.getvalue().startswith("· a: probe (cached)  ")
    assert out.getvalue().count("(cached)") == 1


def test_quiet_prints_nothing():
    out = io.StringIO()
    with StepProgress(enabled=False, stream=out) as progress:
        progress("a: split (pooled)")
        progress.advance(1, 2)
        progress.finish("(cached)")
    assert out.getvalue() == ""


def test_no_total_line_after_an_error():
    progress, out = _plain()
    try:
        with progress:
            progress("a: split (pooled)")
            raise ValueError("boom")
    except ValueError:
        pass
    assert out.getvalue().startswith("· a: split (pooled)")
    assert "done in" not in out.getvalue()


def test_live_bars_render_to_a_terminal_console():
    progress = StepProgress(live=True)
    with progress:
        progress("a: features of val (10 images)")
        progress.advance(10, 10)
        progress("a: probe (cached)")
        tasks = progress._bars.tasks
        assert [t.description for t in tasks] == ["a: features of val (10 images)",
                                                  "a: probe (cached)"]
        assert all(t.finished for t in tasks)
