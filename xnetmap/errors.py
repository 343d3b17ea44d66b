"""One family of user-facing errors; each carries the exit code DESIGN.md assigns.

Library code raises these and never prints or exits. ``xnetmap.cli.main`` turns
them into one line on stderr and the exit code. Anything else escaping the
library is a bug: the CLI prints its traceback and exits 5.
"""

from __future__ import annotations


class XnetmapError(Exception):
    """Base class. ``exit_code`` follows the table in DESIGN.md."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class VerificationFailed(XnetmapError):
    """A check ran and said no: split certificate out of tolerance, ``check`` gate failed."""

    exit_code = 1


class UsageError(XnetmapError):
    """Bad arguments, missing or corrupt input file, configuration error, fingerprint mismatch."""

    exit_code = 2


class InputError(UsageError):
    """A missing, unreadable or malformed input file or dataset (exit 2)."""


class DeviceUnavailable(UsageError):
    """A requested device or provider is not available (exit 2; never a silent CPU run)."""


class ModelRejected(XnetmapError):
    """Not valid ONNX, unsafe external data, unsupported opset/operator, or undetectable head."""

    exit_code = 3


class TooManyBadImages(XnetmapError):
    """More unreadable images than ``--max-bad`` allows."""

    exit_code = 4


class InternalError(XnetmapError):
    """An invariant broke: a bug in xnetmap. The CLI prints the traceback."""

    exit_code = 5


class OutputNotWritten(InputError, OSError):
    """Writing an output file failed: disk full, quota, file too large, read-only
    file system, a folder in the way (exit 2; nothing partial is left behind).

    Also an ``OSError`` carrying the original ``errno``, ``strerror`` and
    ``filename``, so a caller that turns a failed write into its own message
    (the feature store, split) keeps doing so.
    """

    def __init__(self, message: str, *, errno=None, strerror=None, filename=None):
        super().__init__(message)
        self.errno, self.strerror, self.filename = errno, strerror, filename
