"""The optional parts of saxsdog: one table of extras, and a helpful error when one is missing.

``pip install saxsdog`` brings the core: reading images, calibrations, integration and the
``saxsdog`` command with its local worker pool.  The rest comes with extras, for example
``pip install 'saxsdog[server]'``.  This table is the one place that says which package
belongs to which extra; ``pyproject.toml`` lists the same (a test compares them), and code
that needs an optional package imports it through :func:`import_optional`, so a user who
lacks it reads one line saying what to install instead of a traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

__all__ = ["EXTRAS", "Extra", "MissingExtraError", "import_optional", "extra_of", "missing_extra_message"]


@dataclass(frozen=True)
class Extra:
    """One extra: what it is for, and its distributions with the module each provides."""

    purpose: str
    #: distribution name (as in pyproject) → top-level module it installs
    packages: dict[str, str]


EXTRAS: dict[str, Extra] = {
    "server": Extra("the server, the feeder, the command-line and web leash",
                    {"pyzmq": "zmq", "starlette": "starlette", "uvicorn": "uvicorn", "websockets": "websockets",
                     "plotly": "plotly"}),
    "stream": Extra("detector streams (Dectris stream v1/v2) and raw-frame files",
                    {"pyzmq": "zmq", "lz4": "lz4", "bitshuffle": "bitshuffle", "cbor2": "cbor2"}),
    "merge": Extra("saxsdmerge and the server's mergedata (tables, Excel output)",
                   {"pandas": "pandas", "openpyxl": "openpyxl"}),
    "plot": Extra("plots: plotchi, saxsdog -s/-p/-m, the web leash's mask preview",
                  {"matplotlib": "matplotlib"}),
    "dask": Extra("running on a Dask distributed cluster (--scheduler)",
                  {"dask[distributed]": "distributed"}),
    "pyfai": Extra("PONI import and export through pyFAI",
                   {"pyFAI": "pyFAI"}),
    "calibrate": Extra("saxsdog calibrate (calibrant d-spacings from pyFAI, the picture with matplotlib)",
                       {"pyFAI": "pyFAI", "matplotlib": "matplotlib"}),
    "classify": Extra("the Guinier, Rambo-Tainer and CorMap classifiers (Rg, I(0), mass, frame similarity)",
                      {"freesas": "freesas"}),
}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message says which extra brings it."""


def extra_of(module: str) -> str:
    """The extra that installs top-level ``module`` (the first that lists it).

    Raises
    ------
    KeyError
        ``module`` belongs to no extra.
    """
    top = module.split(".", 1)[0]
    for name, extra in EXTRAS.items():
        if top in extra.packages.values():
            return name
    raise KeyError(module)


def missing_extra_message(module: str, extra: str | None = None, needed_for: str | None = None) -> str:
    """The one line saying that ``needed_for`` needs ``module`` and which extra installs it.

    ``extra`` defaults to the one :data:`EXTRAS` lists for the module, ``needed_for`` to the
    extra's purpose.
    """
    name = extra or extra_of(module)
    what = needed_for or EXTRAS[name].purpose
    return (f"{what} needs the Python package '{module.split('.', 1)[0]}', which is not installed: "
            f"pip install 'saxsdog[{name}]'")


def import_optional(module: str, extra: str | None = None, needed_for: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming the extra to install.

    Parameters
    ----------
    module
        Module to import, e.g. ``"zmq"`` or ``"lz4.block"``.
    extra
        The extra to name; by default the one :data:`EXTRAS` lists for the module.
    needed_for
        What the caller was doing, for the message (default: the extra's purpose).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(missing_extra_message(module, extra, needed_for)) from exc
