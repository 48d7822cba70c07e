"""Where an image's outputs go (the original's naming rules), and keeping them inside a base folder.

The server confines every output to its base directory (:attr:`QueueOptions.confine_to`);
the plain ``saxsdog`` command has no base and writes where the user says.  Confined, an
output is checked when it is written, not only when the queue starts: a folder on the
way that became a symbolic link to an outside folder since is refused
(:class:`OutputRefused`), and a symbolic link at the output's own name is never written
through (the atomic rename replaces the link itself, :func:`write_output_bytes` creates
its temporary file with ``O_NOFOLLOW``, the live file list opens with ``O_NOFOLLOW``).
"""

from __future__ import annotations

import errno
import functools
import os
import re
from pathlib import Path

from ..errors import SaxsdogError
from ..io.atomic import atomic_write_bytes, atomic_write_bytes_at
from ..io.images.discovery import inside
from ..io.images.registry import strip_image_suffix
from .options import QueueOptions

PathArg = str | os.PathLike[str]


class OutputRefused(SaxsdogError):
    """An output the server will not write: its folder resolves outside the base directory,
    or its name is a symbolic link."""


def _nearest_existing(folder: Path) -> Path:
    p = folder
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    return p


def check_output_folder(folder: PathArg, base: PathArg) -> Path:
    """The real path of ``folder``, which must be ``base`` or below it (symbolic links resolved now).

    ``folder`` need not exist yet: then its nearest existing ancestor is checked too (a
    ``mkdir`` below a link to an outside folder would create folders outside).

    Raises
    ------
    OutputRefused
        The folder (or the ancestor that exists) resolves outside ``base``.
    """
    folder = Path(os.path.abspath(folder))
    existing = _nearest_existing(folder)
    for p in {existing, folder}:
        if not inside(p, base):
            raise OutputRefused(f"the output folder {folder} resolves to {os.path.realpath(p)}, outside the "
                                f"server's base directory {os.path.realpath(base)}: nothing is written there")
    return Path(os.path.realpath(folder))


def make_output_folder(folder: PathArg, base: PathArg | None = None) -> Path:
    """Create ``folder`` (and its parents); with ``base``, only inside it (checked before and after)."""
    if base is None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    check_output_folder(folder, base)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return check_output_folder(folder, base)  # a link swapped in meanwhile


def _fd_inside(fd: int, base: PathArg) -> bool:
    """Whether the open folder ``fd`` is inside ``base`` (Linux: where it really is now)."""
    proc = f"/proc/self/fd/{fd}"
    if not os.path.exists(proc):
        return True  # no /proc: the checks by name before opening are all there is
    return inside(os.readlink(proc), base)


def open_output(path: PathArg, flags: int, mode: int = 0o644, base: PathArg | None = None) -> int:
    """``os.open`` of an output file kept open (the live file list); with ``base``, only inside it.

    Confined, the folder must resolve inside ``base`` and ``path`` itself must not be a
    symbolic link (``O_NOFOLLOW``): appending through a link would write wherever it
    points.

    Raises
    ------
    OutputRefused
        The folder resolves outside ``base``, or ``path`` is a symbolic link.
    """
    if base is None:
        return os.open(path, flags, mode)
    check_output_folder(Path(path).parent, base)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputRefused(f"{path} is a symbolic link (to {os.path.realpath(path)}): the server never "
                                f"writes through one; remove the link and a new file is started") from None
        raise
    if not _fd_inside(fd, base):
        os.close(fd)
        raise OutputRefused(f"{path} resolves outside the server's base directory {os.path.realpath(base)}: "
                            f"nothing is written there")
    return fd


def claim_temporary(path: PathArg, base: PathArg) -> None:
    """Create this thread's temporary file for ``path`` as a new regular file, inside ``base``.

    For writers that open the temporary name themselves (h5py's run files): a link planted
    at that (predictable) name is removed, not written through; the writer then truncates
    the file made here.

    Raises
    ------
    OutputRefused
        The folder resolves outside ``base``.
    """
    from ..io.atomic import temporary_name

    check_output_folder(Path(path).parent, base)
    tmp = temporary_name(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileExistsError:
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o666)
    os.close(fd)


def write_output_bytes(path: PathArg, content: bytes, base: PathArg | None = None) -> None:
    """Write ``content`` to ``path`` atomically; with ``base``, only inside it.

    Confined, the folder is opened once (``O_NOFOLLOW``) and checked to be inside ``base``,
    and the temporary file is created and renamed relative to that open folder: a folder
    swapped for a link after the check cannot redirect the write, and neither can a link
    at the temporary name (``O_EXCL | O_NOFOLLOW``).  A link at the output's own name is
    replaced by the new file, never written through.

    Raises
    ------
    OutputRefused
        The folder resolves outside ``base``.
    """
    path = Path(path)
    if base is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, content)
        return
    real_folder = check_output_folder(path.parent, base)
    if not real_folder.is_dir():
        real_folder = make_output_folder(path.parent, base)
    try:
        dir_fd = os.open(real_folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OutputRefused(f"the output folder {path.parent} was replaced by a symbolic link: "
                                f"nothing is written there") from None
        raise
    try:
        if not _fd_inside(dir_fd, base):
            raise OutputRefused(f"the output folder {path.parent} moved outside the server's base directory "
                                f"{os.path.realpath(base)}: nothing is written there")
        atomic_write_bytes_at(dir_fd, path.name, content)
    finally:
        os.close(dir_fd)


#: Inserted before the extension of an output that holds the background-subtracted curve.
SUBTRACTED_SUFFIX = "_sub"


def subtracted_path(path: PathArg) -> Path:
    """Where the background-subtracted twin of an output goes: ``_sub`` before the extension.

    With a ``Background`` in the calibration every curve also has a subtracted one
    (:attr:`saxsdog.core.integrators.Curve.subtracted`), written beside it:

    * ``.chi``: ``<stem>.chi`` → ``<stem>_sub.chi``; the further masks' and slices'
      ``<stem>_c<kind><n>.chi`` → ``<stem>_c<kind><n>_sub.chi``.
    * NXcanSAS run files: ``<run>.h5`` → ``<run>_sub.h5``, ``<run>_c<kind><n>.h5`` →
      ``<run>_c<kind><n>_sub.h5`` (one entry per frame, titled like the unsubtracted one).
    * NXcanSAS per image (``<stem>.h5``): no second file, but one more entry per curve in the
      same file, titled ``<frame> [sub]`` (first integrator) or ``<frame> [c<kind><n>_sub]``.

    >>> subtracted_path("work/img_00001_cR1.chi").as_posix()
    'work/img_00001_cR1_sub.chi'
    """
    path = Path(path)
    return path.with_name(path.stem + SUBTRACTED_SUFFIX + path.suffix)


def image_stem(path: str | os.PathLike[str]) -> str:
    """File name without its image extension (``x.tif`` → ``x``, ``y_master.h5`` → ``y_master``)."""
    return strip_image_suffix(Path(path).name)  # the suffix table of saxsdog.io.images


def output_base(image: str | os.PathLike[str], root: str | os.PathLike[str], options: QueueOptions,
                frame: int | None = None, stem: str | None = None) -> Path:
    """Output path without suffix and extension.

    With ``out_dir`` every output goes there and the image's folder relative to ``root``
    is joined with ``_`` in front of its name; otherwise outputs go to
    ``<image folder>/<relpath>/``.  Frames of multi-frame files get ``_<frame:05d>``.

    ``stem`` replaces the whole file name (before the frame number): the queue gives it
    to an image whose usual name another image of the queue writes already
    (:func:`output_key`; the second one is named ``<name>~2``, the next ``~3``, ...).
    """
    image = Path(image)
    if stem is not None:
        base = output_base(image, root, options).parent / stem
        return base if frame is None else base.with_name(f"{stem}_{frame:05d}")
    stem = image_stem(image)
    if frame is not None:
        stem = f"{stem}_{frame:05d}"
    if options.out_dir is not None:
        parts = list(_relative_parts(str(image.parent), str(root)))
        return Path(options.out_dir) / "_".join(parts + [stem])
    return Path(os.path.normpath(image.parent / options.relpath)) / stem


def output_key(image: str | os.PathLike[str], root: str | os.PathLike[str], options: QueueOptions) -> str:
    """What two images must not share: their output path without suffix and extension.

    ``run/a/x.tif`` and ``run/b/x.tif`` (outputs in ``../work``), ``img.edf`` and
    ``img.cbf``, ``x.tif`` and ``x.tiff``, or with ``out_dir`` ``a_b/x.tif`` and
    ``a/b_x.tif`` all have the same key: every output of one would replace the other's.
    """
    return output_base(image, root, options).as_posix()


@functools.lru_cache(maxsize=4096)
def _relative_parts(folder: str, root: str) -> tuple[str, ...]:
    """The parts of ``folder`` relative to ``root`` (both resolved), ``()`` if outside.

    Cached: resolving costs a few system calls per path component, and every image of a
    folder (every frame of a stream) asks the same question.
    """
    try:
        rel = Path(folder).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return ()
    return tuple(p for p in rel.parts if p not in ("", "."))


def results_dir(root: str | os.PathLike[str], options: QueueOptions) -> Path:
    """Folder of the live file list and monitor plot."""
    if options.out_dir is not None:
        return Path(options.out_dir) / "results"
    return Path(os.path.normpath(Path(root) / options.relpath)) / "results"


def in_directories(image: str | os.PathLike[str], root: str | os.PathLike[str], directories: list[str]) -> bool:
    """Whether an image lies in one of the calibration's ``Directory`` entries."""
    if not directories:
        return True
    try:
        rel = Path(image).parent.resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    for d in directories:
        d = os.path.normpath(d)
        if d in (".", ""):
            return True
        if rel == Path(d) or Path(d) in rel.parents:
            return True
    return False


def frame_name(image: str | os.PathLike[str], root: str | os.PathLike[str], index: int = 0,
               nframes: int = 1) -> str:
    """A frame's name in run files: the image path relative to ``root`` (POSIX separators),
    with ``#<index>`` for frames of multi-frame files.

    Images outside ``root`` are named by their file name alone.
    """
    image = Path(image)
    try:
        rel = image.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        rel = image.name
    return f"{rel}#{index}" if nframes > 1 else rel


def output_root(root: str | os.PathLike[str], options: QueueOptions) -> Path:
    """Folder of the run files: the ``-o`` folder, else the parent of :func:`results_dir`."""
    if options.out_dir is not None:
        return Path(options.out_dir)
    return results_dir(root, options).parent


def run_file_path(folder: str | os.PathLike[str], run_name: str, number: int = 0,
                  suffix: str = "") -> Path:
    """``<folder>/<run name>[_<NNN>]<suffix>.h5``: the run file of one integrator.

    ``number`` 0 is the first run file of that name; resumed runs count 1, 2, ...;
    ``suffix`` is the integrator's output suffix (``""`` for the first, ``_cR1`` ...).
    """
    stem = run_name if number == 0 else f"{run_name}_{number:03d}"
    return Path(folder) / f"{stem}{suffix}.h5"


def existing_run_files(folder: str | os.PathLike[str], run_name: str) -> dict[int, Path]:
    """The first integrator's run files of ``run_name`` in ``folder``, by number."""
    folder = Path(folder)
    found: dict[int, Path] = {}
    if not folder.is_dir():
        return found
    pattern = re.compile(re.escape(run_name) + r"(?:_(\d{3}))?\.h5")
    for p in folder.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_file():
            found[int(m.group(1) or 0)] = p
    return found
