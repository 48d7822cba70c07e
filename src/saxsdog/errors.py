"""Exception types raised by saxsdog.

Every error names the problem precisely enough that a user at the beamline can
fix it without reading the source: a calibration error carries the JSON path,
the offending value and what was expected; an image error carries the file path
and the reason.
"""

from __future__ import annotations

from typing import Any


class SaxsdogError(Exception):
    """Base class of all saxsdog errors."""


class ConfigFieldError(SaxsdogError, ValueError):
    """A field of a JSON configuration (calibration, merge configuration) is invalid.

    Parameters
    ----------
    message
        Human-readable description of the problem.
    path
        JSON path of the offending field, e.g. ``$.Masks[0].MaskFile``.
    value
        The offending value (``None`` when the field is missing).
    expected
        What would have been accepted.
    """

    #: What the configuration is, in the message ("invalid <what> at <path>: ...").
    what = "configuration"

    def __init__(self, message: str, path: str = "$", value: Any = None, expected: str = ""):
        self.path = path
        self.value = value
        self.expected = expected
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"invalid {self.what} at {self.path}: {self.message}"
        if self.expected:
            text += f" (expected {self.expected})"
        return text


class CalibrationError(ConfigFieldError):
    """A calibration is invalid (see :class:`ConfigFieldError` for the attributes)."""

    what = "calibration"


class MaskError(CalibrationError):
    """A mask file is missing, unreadable or does not fit the detector."""


class ImageError(SaxsdogError):
    """An image could not be read or does not fit the calibration.

    Parameters
    ----------
    path
        The image file.
    reason
        Why it failed.
    """

    retryable: bool = False

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class IncompleteImageError(ImageError):
    """The file exists but is not complete yet (still being written, short read).

    Worth retrying after a back-off.
    """

    retryable = True


class CorruptImageError(ImageError):
    """The file is not a readable image and waiting will not help."""


class ImageShapeError(ImageError):
    """The image shape differs from the calibration's image size (``Geometry.ImageSize``)."""


class LedgerError(SaxsdogError):
    """The server's ledger (SQLite) could not be read or written.

    The message names the ledger file and the reason (e.g. "database or disk is full").
    The ledger stays usable: the failed change is kept and written with the next commit.

    Parameters
    ----------
    path
        The ledger file.
    reason
        Why it failed.
    """

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot write the ledger {self.path}: {reason}")
