"""Run the real CLI entry point in-process (exit codes included), capturing what it prints."""

from __future__ import annotations

import contextlib
import io

from xnetmap.cli import main


def run_cli(*args) -> tuple[int, str]:
    """``xnetmap ARGS...`` -> (exit code, stdout + stderr)."""
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
    return code, out.getvalue()
