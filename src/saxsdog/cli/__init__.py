"""Command-line entry points (thin: parse arguments, call the library, report)."""

from __future__ import annotations

import sys


def error_message(exc: BaseException) -> str:
    """A one-line reason for a user-facing error; file errors name the file."""
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def report_error(prog: str, exc: BaseException) -> None:
    """Print ``<prog>: error: <reason>`` on stderr."""
    print(f"{prog}: error: {error_message(exc)}", file=sys.stderr)
