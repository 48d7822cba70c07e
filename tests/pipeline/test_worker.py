"""The worker's per-frame shortcuts give what the general functions give."""

from __future__ import annotations

import os

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
