"""The worker's per-frame shortcuts give what the general functions give."""

from __future__ import annotations

import os
from pathlib import Path

from saxsdog.pipeline import QueueOptions
from saxsdog.pipeline.naming import output_base
from saxsdog.pipeline.tasks import ImageTask
from saxsdog.pipeline.worker import ImageProcessor


def test_output_paths_found_folder_by_folder_are_output_base_s(cal, tmp_path):
    """Outputs of images in the root, in sub-folders, outside the root, with -o and with a
    relative output folder, renamed (output_stem) and frames of multi-frame files: the same
    paths as naming.output_base, on the first image of a folder and on the next ones."""
    root = tmp_path / "run"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    images = [root / "x_00001.tif", root / "x_00002.tif", root / "a" / "y.cbf", root / "a" / "b" / "z.edf.gz",
              root / "a" / "b" / "w.tif", tmp_path / "outside" / "o.tif", root / "a" / "s_master.h5"]
    for options in (QueueOptions(out_dir=tmp_path / "out"), QueueOptions(), QueueOptions(relpath="../../w")):
        proc = ImageProcessor(cal, options)
        for _ in range(2):  # the first time finds the folder, the second uses it
            for image in images:
                for frame, stem in ((None, None), (7, None), (None, "x_00001~2"), (3, "x~3")):
                    task = ImageTask(str(image), str(root), output_stem=stem)
                    base = output_base(str(image), str(root), options, frame, stem=stem)
                    assert proc.outputs_for(task, frame) == [base.with_name(base.name + ".chi")]


def test_a_frame_name_through_a_linked_image_is_resolved(cal, tmp_path):
    """An image that is itself a symbolic link is resolved whole (its folder's real path,
    remembered, would name the link, not its target)."""
    root = tmp_path / "run"
    (root / "real").mkdir(parents=True)
    (root / "real" / "t.tif").write_bytes(b"")
    (root / "view").mkdir()
    os.symlink(root / "real" / "t.tif", root / "view" / "l.tif")
    (root / "view" / "plain.tif").write_bytes(b"")
    proc = ImageProcessor(cal, QueueOptions())
    assert proc._frame_name(str(root / "view" / "plain.tif"), str(root), 0, 1) == "view/plain.tif"
    assert proc._frame_name(str(root / "view" / "l.tif"), str(root), 0, 1) == "real/t.tif"


def _v2_calibration(data_dir, tmp_path):
    """cal.json in format version 2 with solid angle, polarization and exact Poisson errors
    (the benchmark's: its curves' unit labels the intensity column)."""
    import json

    from saxsdog.calibration import Calibration
    from saxsdog.config import CALIBRATION

    raw = json.loads((data_dir / "cal.json").read_text())
    raw["PolarizationCorrection"] = {"Fraction": 0.99, "Angle": 0.0}
    raw["Masks"][0]["MaskFile"] = str((data_dir / raw["Masks"][0]["MaskFile"]).resolve())
    raw["Version"] = CALIBRATION.current_version
    raw["Corrections"] = {"SolidAngle": True, "ErrorModel": "poisson"}
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(raw))
    return Calibration(path)


def test_the_worker_s_chi_files_are_calibration_chi_bytes(cal, data_dir, tmp_path):
    """The worker formats .chi files with its own formatters into buffers written by one
    writev: byte for byte Calibration.chi_bytes (the plain calibration and one whose unit
    relabels the intensity), frame after frame; with chi_drop_empty the rows of empty bins
    go, as ChiFormatter.render with keep gives them."""
    import shutil

    import numpy as np

    from saxsdog.io.chi import RADIAL_LABELS, ChiFormatter
    from saxsdog.io.images import read_image

    root = tmp_path / "run"
    root.mkdir()
    images = [root / f"img_{k:05d}.tif" for k in range(3)]
    for image in images:
        shutil.copyfile(data_dir / "buf1_00000.tif", image)
    frame = read_image(images[0])
    for c in (cal, _v2_calibration(data_dir, tmp_path)):
        curves = c.curves(frame.data, stddev=False, metadata=frame.metadata)
        expected = c.chi_bytes(curves)
        for drop in (False, True):
            out = tmp_path / f"out_{id(c)}_{drop}"
            proc = ImageProcessor(c, QueueOptions(out_dir=out, chi_drop_empty=drop), map_images=True)
            for image in images:
                (result,) = proc.process(ImageTask(str(image), str(root)))
                assert result.error is None
                written = [Path(p).read_bytes() for p in result.outputs]
                if not drop:
                    assert written == [expected[i] for i in proc.chi_index]
                else:
                    it = c.integrators[0]
                    f = ChiFormatter(it.x, c.raw, [it.x_label, *RADIAL_LABELS[1:]])
                    assert written[0] == f.render(curves[0].intensity, curves[0].poisson, curves[0].parameters,
                                                  keep=np.asarray(curves[0].has_data), unit=curves[0].unit)
                assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_a_full_disk_while_the_worker_writes_a_chi_file_fails_the_frame_and_leaves_nothing(cal, data_dir, tmp_path,
                                                                                              monkeypatch):
    """ENOSPC in the middle of the writev: the frame's result is an error naming it (the queue
    retries such images), no output and no temporary file is left."""
    import errno
    import shutil

    from saxsdog.io import atomic

    root = tmp_path / "run"
    root.mkdir()
    image = root / "img_00001.tif"
    shutil.copyfile(data_dir / "buf1_00000.tif", image)
    out = tmp_path / "out"
    proc = ImageProcessor(cal, QueueOptions(out_dir=out), map_images=True)
    real_writev = os.writev
    calls = []

    def half_then_full(fd, buffers):
        calls.append(1)
        if len(calls) == 1:
            return real_writev(fd, buffers[:1])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "writev", half_then_full)
    (result,) = proc.process(ImageTask(str(image), str(root)))
    assert result.error is not None and "No space left" in result.error
    assert list(out.iterdir()) == []
    monkeypatch.setattr(atomic.os, "writev", real_writev)
    (result,) = proc.process(ImageTask(str(image), str(root)))  # space again: written whole
    assert result.error is None and [p.name for p in out.iterdir()] == ["img_00001.chi"]
