"""The console scripts: each runs its command, or says in one line which extra to install.

``pip install saxsdog`` brings the core only (see :mod:`saxsdog.extras`).  A command whose
extra is missing prints, for example::

    saxsdogserver needs the Python package 'zmq', which is not installed: pip install 'saxsdog[server]'

and exits with status 2, instead of a traceback.  The packages a command cannot start without
are checked before its module is imported (``--help`` is always shown); an optional package
that only one of its options needs (``saxsleash plot`` needs matplotlib) is named when it is
first imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from saxsdog.extras import EXTRAS, MissingExtraError, extra_of, missing_extra_message

__all__ = ["EXIT_MISSING_EXTRA", "run", "saxsdog", "saxsconverter", "plotchi", "saxsdogserver", "saxsfeeder",
           "saxsleash", "saxsnetconf", "saxsdmerge", "leash"]

EXIT_MISSING_EXTRA = 2


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package that is missing, or one that fails to import
        return False


def _missing_message(prog: str, module: str, extra: str | None) -> str:
    """The one-line message naming ``module`` and the extra that installs it."""
    top = module.split(".", 1)[0]
    if extra is None or top not in EXTRAS[extra].packages.values():
        try:
            extra = extra_of(top)
        except KeyError:  # not an optional package at all: the caller re-raises
            return ""
    return missing_extra_message(top, extra, prog)


def run(prog: str, module: str, extra: str | None = None, needs: Sequence[str] = (),
        argv: Sequence[str] | None = None) -> int:
    """Run ``module.main(argv)`` as the command ``prog``; a missing extra gives one line and exit 2.

    Parameters
    ----------
    prog
        The command's name, for the message.
    module
        The module whose ``main`` is the command.
    extra
        The command's extra, named when one of ``needs`` (or another of its packages) is missing.
    needs
        Top-level modules the command cannot start without; checked before ``module`` is imported,
        except for ``-h``/``--help``.
    argv
        The arguments (default ``sys.argv[1:]``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not {"-h", "--help"} & set(args):
        for name in needs:
            if not _installed(name):
                print(_missing_message(prog, name, extra), file=sys.stderr)
                return EXIT_MISSING_EXTRA
    try:
        main: Callable[[list[str]], int] = importlib.import_module(module).main
        return main(args)
    except MissingExtraError as exc:
        print(f"{prog}: {exc}" if not str(exc).startswith(prog) else str(exc), file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except ModuleNotFoundError as exc:
        message = _missing_message(prog, exc.name or "", extra) if exc.name else ""
        if not message:
            raise
        print(message, file=sys.stderr)
        return EXIT_MISSING_EXTRA


def _script(prog: str, module: str, extra: str | None = None, needs: Sequence[str] = ()) -> Callable[[], int]:
    def entry() -> int:
        return run(prog, module, extra, needs)

    entry.__name__ = entry.__qualname__ = prog
    entry.__doc__ = f"The ``{prog}`` console script ({module}.main)."
    return entry


def saxsdog() -> NoReturn:
    """The ``saxsdog`` console script (saxsdog.cli.saxsdog.main), ended without the interpreter's
    teardown (:func:`saxsdog.cli.saxsdog.exit_without_teardown`)."""
    code = run("saxsdog", "saxsdog.cli.saxsdog")
    from saxsdog.cli.saxsdog import exit_without_teardown

    exit_without_teardown(code)


saxsconverter = _script("saxsconverter", "saxsdog.cli.converter", "pyfai")
saxsnetconf = _script("saxsnetconf", "saxsdog.cli.netconf")
plotchi = _script("plotchi", "saxsdog.cli.plotchi", "plot", needs=("matplotlib",))
# the web leash's packages are checked when it starts, so --no-http runs without them
saxsdogserver = _script("saxsdogserver", "saxsdog.cli.server", "server", needs=("zmq",))
saxsfeeder = _script("saxsfeeder", "saxsdog.cli.feeder", "server", needs=("zmq",))
saxsleash = _script("saxsleash", "saxsdog.cli.leash", "server", needs=("zmq",))
saxsdmerge = _script("saxsdmerge", "saxsdog.cli.dmerge", "merge", needs=("pandas",))
leash = _script("leash", "saxsdog.cli.leash_web", "server", needs=("starlette", "uvicorn", "websockets"))
