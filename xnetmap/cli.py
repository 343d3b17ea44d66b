"""Thin typer commands over the library API.

Each command parses options, calls one public library function, prints the
result. Heavy modules (onnx, onnxruntime, numpy kernels) are imported inside
the commands so that ``xnetmap --help`` stays instant. Errors: an
``XnetmapError`` becomes one line on stderr and its exit code; anything else
is a bug (traceback, exit 5).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="xnetmap",
    help="Do two trained image classifiers extract the same information from images?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


# ---- section: graph (inspect, split, stitch) -------------------------------

# ---- end section: graph -----------------------------------------------------

# ---- section: data (annotate) ------------------------------------------------

# ---- end section: data -------------------------------------------------------

# ---- section: extract ---------------------------------------------------------

# ---- end section: extract -----------------------------------------------------

# ---- section: fit ---------------------------------------------------------------

# ---- end section: fit -----------------------------------------------------------

# ---- section: study (run-study, demo) --------------------------------------------

# ---- end section: study ----------------------------------------------------------

# ---- section: check ----------------------------------------------------------------

# ---- end section: check ------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: run the typer app, map errors to DESIGN.md's exit codes.

    typer (click) handles usage errors itself (exit 2) and ``--help``; an
    ``XnetmapError`` becomes one line on stderr and its own exit code; any other
    exception is a bug: traceback and exit 5.
    """
    from .errors import XnetmapError

    try:
        app(args=argv, prog_name="xnetmap")
    except XnetmapError as err:
        if err.exit_code == 5:
            traceback.print_exc()
            _echo_err("xnetmap: internal error; please report it with the traceback above.")
        else:
            _echo_err(f"xnetmap: error: {err.message}")
        sys.exit(err.exit_code)
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        _echo_err("xnetmap: internal error (a bug); please report it with the traceback above.")
        sys.exit(5)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """Do two trained image classifiers extract the same information from images?"""
    if version:
        from . import __version__

        typer.echo(f"xnetmap {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


_ = (Path,)  # Path is used by the command sections
