"""The run-file sink (``RunSink``): what its first frame costs the dispatcher, and what it writes.

The dispatcher appends every frame to the run file on the cores the workers need; a run's
first frame creates the file.  Its provenance (the ``sasprocess`` notes) is read from the
calibration as the queue loaded it, not by loading (and checking against the schema) the
calibration document again: that import alone stalled the dispatcher, and so the workers,
for tens of milliseconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from saxsdog import Calibration
from saxsdog.io.nxcansas import process_notes, read_nxcansas


def _cal_v2(data: Path, folder: Path) -> Path:
    raw = json.loads((data / "cal.json").read_text())
    raw["Masks"][0]["MaskFile"] = str((data / raw["Masks"][0]["MaskFile"]).resolve())
    raw["PolarizationCorrection"] = {"Fraction": 0.99, "Angle": 0.0}
    raw["Version"] = 2
    raw["Corrections"] = {"SolidAngle": True, "ErrorModel": "poisson"}
    path = folder / "cal_v2.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize("version", [1, 2])
def test_notes_from_the_loaded_calibration_are_the_notes_of_the_document(data_dir, tmp_path, version):
    path = data_dir / "cal.json" if version == 1 else _cal_v2(data_dir, tmp_path)
    cal = Calibration(path)
    notes = process_notes(cal.raw, cal.config)
    assert notes == process_notes(cal.raw)
    assert any(n["name"] == "error_model" for n in notes)


SCRIPT = textwrap.dedent("""
    import pickle, sys
    from pathlib import Path
    from saxsdog import Calibration
    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.sinks import RunSink
    from saxsdog.pipeline.state import Record
    from saxsdog.pipeline.tasks import ImageTask
    from saxsdog.pipeline.worker import ImageProcessor

    cal = Calibration(sys.argv[1])  # from the cache the first run filled: no schema check
    image = Path(sys.argv[2])
    out = Path(sys.argv[3])
    proc = ImageProcessor(cal, QueueOptions(workers=1, out_dir=out, output_format="nxcansas-run"))
    (result,) = proc.process(ImageTask(path=str(image), root=str(image.parent)))
    before = "jsonschema" in sys.modules
    sink = RunSink(cal, out, lambda: "run")
    sink.record(Record(result.path, "done", (result,)))
    (path,) = sink.close()
    print(before, "jsonschema" in sys.modules, path)
""")


def test_the_first_frame_does_not_load_the_calibration_again(data_dir, tmp_path):
    cal_path = _cal_v2(data_dir, tmp_path)
    env = dict(os.environ, SAXSDOG_CACHE_DIR=str(tmp_path / "cache"))
    run = [sys.executable, "-c", SCRIPT, str(cal_path), str(data_dir / "buf1_00000.tif")]
    # the first run checks the document (and fills the cache), the second loads it from there
    for k in range(2):
        proc = subprocess.run(run + [str(tmp_path / f"out{k}")], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    before, after, path = proc.stdout.split()[-3:]
    assert before == "False", "the calibration's load from the cache imported jsonschema: the test proves nothing"
    assert after == "False", "appending the run's first frame loaded and checked the calibration again"
    (frame,) = read_nxcansas(path)
    assert frame["name"] == "buf1_00000.tif"
    assert frame["calibration"]["Corrections"]["SolidAngle"] is True
