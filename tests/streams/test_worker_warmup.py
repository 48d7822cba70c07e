"""A new worker is ready for stream frames before the first one: nothing is compiled at that frame."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tifffile
    from numba.core import caching
    from saxsdog import Calibration
    from saxsdog.io.codecs import encode_frame
    from saxsdog.pipeline.options import QueueOptions
    from saxsdog.pipeline.tasks import FramePayload, ImageTask
    from saxsdog.pipeline.worker import ImageProcessor
    from saxsdog.pipeline.stream_warmup import warm_up_worker

    data, out, warm = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    cal = Calibration(data + "/cal.json")
    base = tifffile.imread(data + "/buf1_00000.tif")
    cal.curves(np.zeros(cal.shape, dtype=np.int32))  # what the coordinator loads before it forks
    processor = ImageProcessor(cal, QueueOptions(workers=1, out_dir=out, output_format="nxcansas-run"))
    if warm:
        warm_up_worker(processor)
    loads = []  # every specialization loaded from numba's cache (or compiled) from now on
    load_overload = caching.Cache.load_overload
    def counting(self, *args, **kwargs):
        loads.append(1)
        return load_overload(self, *args, **kwargs)
    caching.Cache.load_overload = counting
    compiled = []
    for dtype, blob_type in (("uint32", bytes), ("uint16", bytes), ("uint32", bytearray)):
        pixels = np.where(base >= 0, base, 0).astype(dtype)
        blob = blob_type(encode_frame(pixels, f"bs{8 * pixels.itemsize}-lz4<"))
        task = ImageTask(out + f"/1_{len(compiled):06d}", out,
                         payload=FramePayload(blob, dtype, pixels.shape, f"bs{8 * pixels.itemsize}-lz4<", {}))
        before = len(loads)
        result, = processor.process(task)
        assert result.error is None, result.error
        compiled.append(len(loads) - before)
    print(compiled)
""")


def _compilations(shared_data, tmp_path, warm: bool) -> list[int]:
    env = {**os.environ, "SAXSDOG_CACHE_DIR": str(tmp_path / "cache")}
    cache = os.environ.get("SAXSDOG_CACHE_DIR")
    if cache:
        env["SAXSDOG_CACHE_DIR"] = cache
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(shared_data), str(tmp_path), "1" if warm else "0"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    return eval(run.stdout.strip().splitlines()[-1])  # noqa: S307 - our own script's list of ints


@pytest.mark.slow
def test_after_the_warm_up_a_stream_frame_compiles_nothing(shared_data, tmp_path):
    """uint32 and uint16 frames, a read-only and a writeable blob: all loaded by the warm-up.

    Without it the first uint32 frame of a fresh worker loaded kernels (tens of ms under
    the frames queued behind it)."""
    assert sum(_compilations(shared_data, tmp_path, warm=False)) > 0  # the check sees them
    assert _compilations(shared_data, tmp_path, warm=True) == [0, 0, 0]
