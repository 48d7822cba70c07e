"""The best a pyFAI user could do on the same cores: a read/integrate/write loop in N processes.

Each process runs one thread (``OMP_NUM_THREADS=1``, so N processes use N cores as saxsdog's
N workers do), builds its integrator and CSR engine, integrates one warm-up frame, waits for
the others and then handles every N-th file: ``fabio.open`` + ``integrate1d`` (bbox split,
CSR, Cython) with the same corrections as saxsdog + pyFAI's own ``.dat`` writer.  The time
is from the common start to the last process's end; the integrators' set-up is *not*
counted (it favours pyFAI: saxsdog's figures include its start-up).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any


def _worker(config: dict[str, Any], paths: list[str], out_dir: str, barrier: Any, queue: Any) -> None:
    import fabio
    import numpy as np

    from saxsdog.io.poni import calibration_to_integrator

    ai = calibration_to_integrator(config["calibration"])
    mask = np.load(config["mask"]) if config.get("mask") else None
    kwargs = dict(unit="q_nm^-1", method=("bbox", "csr", "cython"), correctSolidAngle=config["solid_angle"],
                  mask=mask, error_model="poisson", radial_range=tuple(config["radial_range"]))
    if config.get("polarization_factor") is not None:
        kwargs["polarization_factor"] = config["polarization_factor"]
    npt = int(config["npt"])
    ai.integrate1d(fabio.open(paths[0]).data, npt, **kwargs)  # builds the CSR engine
    barrier.wait()
    t0 = time.perf_counter()
    for p in paths:
        ai.integrate1d(fabio.open(p).data, npt, filename=os.path.join(out_dir, Path(p).stem + ".dat"), **kwargs)
    queue.put((t0, time.perf_counter(), len(paths)))


def pyfai_loop(calibration_raw: dict[str, Any], mask_valid: Any, npt: int, radial_range: tuple[float, float],
               paths: list[Path], out_dir: Path, processes: int = 2, solid_angle: bool = True,
               polarization_factor: float | None = None) -> dict[str, float]:
    """Run the loop; return ``{"frames_per_s", "frames", "seconds"}``.

    ``mask_valid`` is saxsdog's validity map (True = used) in image orientation, or None.
    """
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"calibration": json.loads(json.dumps(calibration_raw)), "npt": npt,
                              "radial_range": list(radial_range), "solid_angle": solid_angle,
                              "polarization_factor": polarization_factor}
    if mask_valid is not None:
        np.save(out_dir / "mask.npy", ~np.asarray(mask_valid, dtype=bool))
        config["mask"] = str(out_dir / "mask.npy")
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(processes)
        queue = ctx.Queue()
        shares = [[str(p) for p in paths[i::processes]] for i in range(processes)]
        procs = [ctx.Process(target=_worker, args=(config, s, str(out_dir), barrier, queue)) for s in shares if s]
        for p in procs:
            p.start()
        results = [queue.get(timeout=3600) for _ in procs]
        for p in procs:
            p.join()
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    frames = sum(r[2] for r in results)
    return {"frames_per_s": frames / (end - start), "frames": frames, "seconds": end - start}
