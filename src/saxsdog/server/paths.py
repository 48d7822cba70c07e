"""Keeping every path a client or the feeder names inside the server's base directory."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence

from ..errors import SaxsdogError


class PathOutsideBase(SaxsdogError):
    """A requested path resolves outside the server's base directory."""


def resolve_inside(base: str | os.PathLike[str], requested: str | os.PathLike[str] | Sequence[str]) -> Path:
    """Resolve a client-supplied path and make sure it stays inside ``base``.

    Parameters
    ----------
    base
        The server's base directory.
    requested
        A path relative to ``base`` (or absolute, but then inside ``base``), or a list of
        path components as the original protocol sends directories.

    Returns
    -------
    Path
        The resolved absolute path (symlinks followed).

    Raises
    ------
    PathOutsideBase
        For ``..`` escapes, absolute paths elsewhere and symlinks pointing outside.
    """
    base_real = Path(os.path.realpath(base))
    if isinstance(requested, (list, tuple)):
        if not all(isinstance(p, str) for p in requested):
            raise PathOutsideBase("a directory must be a list of path components (strings)")
        parts = [p for p in requested if p not in ("", ".")]
        requested = os.path.join(*parts) if parts else "."
    if not isinstance(requested, (str, os.PathLike)):
        raise PathOutsideBase(f"not a path: {requested!r}")
    text = os.fspath(requested)
    if "\x00" in text:
        raise PathOutsideBase("path contains a NUL character")
    candidate = Path(text)
    if not candidate.is_absolute():
        candidate = base_real / candidate
    real = Path(os.path.realpath(candidate))  # follows every symlink on the way
    if real != base_real and base_real not in real.parents:
        raise PathOutsideBase(f"{text!r} is outside the server's base directory")
    return real


def relative_to_base(base: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """Path shown to clients: relative to the base directory."""
    return os.path.relpath(os.path.realpath(path), os.path.realpath(base))
