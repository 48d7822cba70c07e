"""The command table: every leash command in one place.

Each :class:`Command` names the wire command, its aliases, the ``"result"`` a server
answers on success, the argument schema (a ``$defs`` entry of
``leash_request.schema.json``), the server method that carries it out, where the server
runs it, and how ``saxsleash`` offers it.  The server's dispatch and request validation,
the ``saxsleash`` subcommands and the web page's command list (the ``commands`` command)
all derive from :data:`COMMANDS`; nothing else lists command names.

Where the original SAXSDOG manual gives a result spelling (``"new queue"``,
``"queue closed"``, ``"queue stopped emptied and closed"``, ``"plot data"``,
``"directory refilled queue"``, ``"stat"``) it is kept.  The manual lists ``dircontent``
as the payload of ``listdir``; ``listdir`` answers with that name as its result too.

Where a command runs (``runs``)
-------------------------------
``inline``
    Quick, read-only: answered on the thread that received it.
``serial``
    Changes the queue (``new``, ``close``, ``abort``, ``readdir``, ``mergedata``): runs
    on the server's single command worker thread, one after the other, never on the
    thread that answers requests.
``parallel``
    Slow but read-only (``listdir`` of a huge folder, mask preview, PONI import, the
    detector tools of the page: frame pixels, mask files, calibrant fit): runs
    in a small pool of worker threads.

The ZeroMQ service answers a ``serial`` or ``parallel`` command when it is done, with
its own result (as the original SAXSDOG server did), and serves other clients meanwhile.
Only an in-process caller that asks :meth:`~saxsdog.server.handler.CommandHandler.execute`
for a bounded wait can get the result :data:`PENDING_RESULT` with a ``data.job``
description; the ``job`` command fetches the final answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Command", "CliUsage", "COMMANDS", "BY_NAME", "ALIASES", "PENDING_RESULT",
           "find_command", "command_names", "describe_commands"]

#: The ``"result"`` of an answer to a command that is still running (``data.job`` says which).
PENDING_RESULT = "accepted"


@dataclass(frozen=True)
class CliUsage:
    """How ``saxsleash`` offers a command.

    Attributes
    ----------
    usage
        The positional arguments as shown in the help, e.g. ``"CAL.json MASK DIR"``.
    min_args, max_args
        How many positional arguments it takes.
    builder
        Name of the function in :mod:`saxsdog.protocol.client` that turns the positional
        arguments into ``(argument, attachments)``; empty: no argument.
    """

    usage: str = ""
    min_args: int = 0
    max_args: int = 0
    builder: str = ""


@dataclass(frozen=True)
class Command:
    """One leash command.

    Attributes
    ----------
    name
        The wire name (what a request's ``"command"`` holds).
    result
        The ``"result"`` of a successful answer.
    summary
        One line for help texts and the page.
    argument
        The ``$defs`` entry of ``leash_request.schema.json`` the argument must match.
    argument_required
        Whether a request must carry an argument.
    aliases
        Other names accepted for it (the long names of the original manual's examples).
    runs
        ``"inline"``, ``"serial"`` or ``"parallel"`` (see the module documentation).
    attachments
        What the attachment frames are; empty: the command takes none.
    cli
        How ``saxsleash`` offers it; ``None``: not a ``saxsleash`` subcommand.
    """

    name: str
    result: str
    summary: str
    argument: str = "emptyArgument"
    argument_required: bool = False
    aliases: tuple[str, ...] = ()
    runs: str = "inline"
    attachments: str = ""
    cli: CliUsage | None = field(default_factory=CliUsage)

    @property
    def method(self) -> str:
        """Name of the :class:`~saxsdog.server.handler.CommandHandler` method that carries it out."""
        return "cmd_" + self.name


COMMANDS: tuple[Command, ...] = (
    Command("new", "new queue",
            "load a calibration with its mask and start a queue for DIR (relative to the server's base "
            "directory); replaces a running queue",
            argument="newArgument", argument_required=True, aliases=("new queue",), runs="serial",
            attachments="one mask file per calibration Masks entry (an empty frame: no mask)",
            cli=CliUsage("CAL.json MASK DIR", 3, 3, "build_new_request")),
    Command("close", "queue closed", "close the queue: finish what is queued, ignore new files",
            aliases=("close queue",), runs="serial"),
    Command("abort", "queue stopped emptied and closed", "stop processing now; queued images are dropped",
            aliases=("abort queue",), runs="serial"),
    Command("readdir", "directory refilled queue", "queue every image already in the queue's directory again",
            runs="serial"),
    Command("stat", "stat", "show processing statistics"),
    Command("plot", "plot data", "plot the latest curve, repeatedly until Ctrl-C (or once into -o FILE)",
            aliases=("send plot",)),
    Command("plotdata", "plotdata", "print the history of the classifiers (I0, I1, I2, ...) per image",
            argument="sinceArgument", aliases=("get plotdata",)),
    Command("get", "cal", "show the current calibration and queue directory", argument="sinceArgument"),
    Command("listdir", "dircontent", "list a directory on the server (default: its base directory)",
            argument="listdirArgument", runs="parallel",
            cli=CliUsage("[DIR]", 0, 1, "build_listdir_request")),
    Command("fileslist", "fileslist", "list the files written so far"),
    Command("mergedata", "mergedata", "merge log tables with image data on the server",
            argument="mergedataArgument", argument_required=True, runs="serial",
            attachments="the log files named by argument.filenames",
            cli=CliUsage("MERGECONF.json", 1, 1, "build_mergedata_request")),
    Command("getmergedata", "mergedata", "get the result of the last data merge"),
    Command("validate", "validate", "check a calibration file on the server: every problem with its JSON path",
            argument="validateArgument", argument_required=True,
            cli=CliUsage("CAL.json", 1, 1, "build_validate_request")),
    Command("convertfit2d", "calibration", "make a calibration from a FIT2D geometry text (TEMPLATE: "
            "the calibration it completes)",
            argument="convertArgument", argument_required=True,
            cli=CliUsage("FIT2D.txt [TEMPLATE.json]", 1, 2, "build_convert_request")),
    Command("convertponi", "calibration", "make a calibration from a pyFAI PONI file (TEMPLATE: the "
            "calibration it completes; needs pyFAI on the server)",
            argument="convertArgument", argument_required=True, runs="parallel",
            cli=CliUsage("FILE.poni [TEMPLATE.json]", 1, 2, "build_convert_request")),
    Command("maskpreview", "maskpreview", "draw the mask of a calibration over an image (PNG; "
            "IMAGE relative to the server's base directory) into -o FILE",
            argument="maskpreviewArgument", argument_required=True, runs="parallel",
            attachments="the mask file named by argument.filenames[0] (optional)",
            cli=CliUsage("CAL.json [MASK] [IMAGE]", 1, 3, "build_maskpreview_request")),
    Command("absolute", "absolute", "the absolute-scale factor (Normalization.AbsoluteScale) from a measured "
            "standard's curve on the server (.chi or NXcanSAS, relative to the base directory): water, or "
            "a reference table sent as text (saxsdog absolute on the command line)",
            argument="absoluteArgument", argument_required=True, runs="parallel", cli=None),
    Command("detectorframe", "detectorframe", "the pixels of a frame (default: the latest the queue processed) "
            "as float32, binned down to at most maxside pixels a side, for the page's detector view",
            argument="detectorframeArgument", runs="parallel", cli=None),
    Command("calibrants", "calibrants", "the calibrant names pyFAI knows, and the d-spacings of one",
            argument="calibrantsArgument", runs="parallel", cli=None),
    Command("maskencode", "maskfile", "a mask file (FIT2D .msk, TIFF, EDF or NPY, in saxsdog's orientation) "
            "of a mask drawn in the page",
            argument="maskencodeArgument", argument_required=True, runs="parallel",
            attachments="the mask: one byte per pixel, row 0 at the top, non-zero = masked", cli=None),
    Command("maskdecode", "mask", "a mask file read as saxsdog reads it, as one byte per pixel (1 = masked)",
            argument="maskdecodeArgument", argument_required=True, runs="parallel",
            attachments="the mask file named by argument.filenames[0]", cli=None),
    Command("calibrateimage", "calibrated", "fit the geometry to a calibrant image on the server or uploaded, "
            "with the fit of 'saxsdog calibrate'",
            argument="calibrateimageArgument", argument_required=True, runs="parallel",
            attachments="the image named by argument.filenames[0] when it is uploaded; then, when "
                        "argument.mask is true, the mask (one byte per pixel, non-zero = masked)", cli=None),
    Command("commands", "commands", "list the server's commands with their arguments"),
    Command("job", "job", "the answer of a command that was still running (argument: its job id)",
            argument="jobArgument", argument_required=True, cli=None),
)

#: Each command by its wire name.
BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}
#: Each alias and the wire name it stands for.
ALIASES: dict[str, str] = {a: c.name for c in COMMANDS for a in c.aliases}


def find_command(name: Any) -> Command | None:
    """The command called ``name`` (or one of its aliases), or ``None``."""
    if not isinstance(name, str):
        return None
    return BY_NAME.get(ALIASES.get(name, name))


def command_names() -> tuple[str, ...]:
    """The wire names, in table order."""
    return tuple(c.name for c in COMMANDS)


def _inline_refs(node: Any, defs: Mapping[str, Any], depth: int = 0) -> Any:
    """``node`` with every local ``{"$ref": "#/$defs/X"}`` replaced by a copy of ``X``."""
    if depth > 20:  # the argument schemas are not recursive; this only guards a mistake
        raise ValueError("argument schema nests too deeply")
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            merged = dict(_inline_refs(defs[ref[len("#/$defs/"):]], defs, depth + 1))
            merged.update({k: _inline_refs(v, defs, depth + 1) for k, v in node.items() if k != "$ref"})
            return merged
        return {k: _inline_refs(v, defs, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs, depth + 1) for v in node]
    return node


def describe_commands() -> list[dict[str, Any]]:
    """The table as JSON for clients (the answer of the ``commands`` command).

    Each entry: ``name``, ``aliases``, ``result``, ``summary``, ``argument`` (its JSON
    Schema, references resolved), ``argument_required``, ``attachments``, ``runs`` and
    ``usage`` (the ``saxsleash`` arguments, ``null`` for commands not offered there).
    """
    from saxsdog.schemas import load_schema

    defs = load_schema("leash_request.schema.json")["$defs"]
    return [{"name": c.name, "aliases": list(c.aliases), "result": c.result, "summary": c.summary,
             "argument": _inline_refs(defs[c.argument], defs), "argument_required": c.argument_required,
             "attachments": c.attachments, "runs": c.runs,
             "usage": None if c.cli is None else c.cli.usage} for c in COMMANDS]
