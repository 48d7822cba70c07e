"""Benchmark: detector-stream ingest end to end (Dectris stream v1 → curves on disk).

Usage::

    python benchmarks/bench_stream.py [--frames 2000] [--workers 2] [--json out.json] [--quick]

A sender process plays the detector: it binds a PUSH socket on 127.0.0.1 and sends a series
of Pilatus 1M frames (1043 × 981; made from the real ``buf1_00000.tif``, int32 → uint32 as
detectors send, each frame different) encoded bitshuffle-LZ4 (``bs32-lz4<``, the Eiger
default), as fast as the receiver takes them.  saxsdog receives them in its coordinator,
the workers decode and integrate them (errors and integral parameters), and the results go
to an NXcanSAS run file; optionally the raw frames are also kept (NeXus master + data
files).  The last row sends the same frames as stream v2 (one CBOR message each, DECTRIS
``bslz4`` compression).  Reported: frames/s from the first frame sent to the run file
closed, and the mean per-frame times of the workers' stages; a separate row times the
bitshuffle-LZ4 decode of one frame alone (the library's path, into a reused buffer).
``--quick``: a few frames per row, every result checked, timings meaningless.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Report, parser, per_call  # noqa: E402


def make_blobs(data: Path, n_distinct: int) -> tuple[list[bytes], tuple[int, int]]:
    import numpy as np
    import tifffile

    from saxsdog.io.codecs import encode_frame

    base = tifffile.imread(data / "buf1_00000.tif").astype(np.int64)
    blobs = [encode_frame(np.where(base >= 0, base + k, base).astype(np.uint32), "bs32-lz4<")
             for k in range(n_distinct)]
    return blobs, base.shape


def sender(endpoint_q, go, blobs: list[bytes], shape, n: int, series: int, protocol: str = "v1") -> None:
    from saxsdog.streams import stream2
    from saxsdog.streams.dectris import DectrisSender

    config = {"count_time": 0.002, "frame_time": 0.0025}
    with DectrisSender(sndhwm=64) as snd:
        endpoint_q.put(snd.endpoint)
        go.wait(60)
        endpoint_q.put(time.time())
        if protocol == "v2":  # one CBOR message per frame
            snd.send_parts([stream2.encode_start(series, {**config, "incident_wavelength": 1.54})], timeout=60)
            for k in range(n):
                snd.send_parts([stream2.encode_image(series, k, blobs[k % len(blobs)], shape, "uint32",
                                                     "bs32-lz4<")], timeout=60)
            snd.send_parts([stream2.encode_end(series)], timeout=60)
            return
        snd.send_header(series, {**config, "wavelength": 1.54, "description": "bench sender"}, timeout=60)
        for k in range(n):
            snd.send_frame(series, k, blobs[k % len(blobs)], shape, "uint32", "bs32-lz4<", timeout=60)
        snd.send_end(series, timeout=60)


def run(cal, blobs, shape, n: int, workers: int, tmp: Path, keep_raw: bool, fmt: str,
        protocol: str = "v1") -> dict:
    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.queue import ImageQueue
    from saxsdog.streams.dectris import DectrisStreamSource

    out = tmp / f"out_{fmt}_{int(keep_raw)}_{protocol}"
    ctx = mp.get_context("fork")
    endpoint_q, go = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=sender, args=(endpoint_q, go, blobs, shape, n, 1, protocol), daemon=True)
    proc.start()
    endpoint = endpoint_q.get(timeout=60)
    q = ImageQueue(cal, out, QueueOptions(workers=workers, out_dir=out, output_format=fmt)).start()
    src = DectrisStreamSource(endpoint, q, keep_raw=(tmp / f"raw_{fmt}_{protocol}") if keep_raw else None).start()
    go.set()
    t_sent = endpoint_q.get(timeout=60)
    ok = src.ended.wait(600) and q.wait_until_idle(600)
    src.stop()
    q.stop()  # closes (renames) the run file
    elapsed = time.time() - t_sent
    proc.join(30)
    st = q.stats()
    raw_bytes = sum(p.stat().st_size for p in src.raw_files)
    return {"ok": ok and st["images_processed"] == n and not q.history.failures,
            "fps": n / elapsed, "frames": st["images_processed"], "stages": st["stage_seconds"],
            "run": q.run_files, "raw_mb": raw_bytes / 1e6}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--distinct", type=int, default=16, help="different frames cycled by the sender")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.distinct = 12, 3

    from saxsdog import Calibration
    from saxsdog.io.codecs import decode_frame

    report = Report(f"Stream ingest, Pilatus 1M bitshuffle-LZ4, {args.workers} workers, {args.frames} frames", args)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ.setdefault("SAXSDOG_CACHE_DIR", str(tmp / "cache"))
        cal = Calibration(args.data / "cal.json")
        blobs, shape = make_blobs(args.data, args.distinct)
        mean_blob = sum(map(len, blobs)) / len(blobs)
        report.context["frames"] = (f"{shape[0]}x{shape[1]} uint32 bs32-lz4< ({mean_blob / 1e6:.2f} MB each, "
                                    f"{4 * shape[0] * shape[1] / mean_blob:.1f}x compressed)")
        report.section("decode alone, one core")
        decoded = decode_frame(blobs[0], "uint32", shape, "bs32-lz4<")
        report.check(decoded.shape == tuple(shape) and int(decoded.max()) > 0, "the decoded frame is wrong")
        report.add("bitshuffle-LZ4 decode of one frame",
                   per_call(lambda: decode_frame(blobs[0], "uint32", shape, "bs32-lz4<"), 5 if args.quick else 200)
                   * 1e3, "ms", key="decode_ms")
        report.section("end to end, first frame sent to run file closed")
        for label, key, fmt, keep, protocol, target in (
                ("NXcanSAS run file, stream v1", "v1_run_fps", "nxcansas-run", False, "v1", ">= 800"),
                ("NXcanSAS run file + raw frames kept", "v1_run_raw_fps", "nxcansas-run", True, "v1", ""),
                (".chi per frame, stream v1", "v1_chi_fps", "chi", False, "v1", ""),
                ("NXcanSAS run file, stream v2 (CBOR)", "v2_run_fps", "nxcansas-run", False, "v2", ">= 800")):
            r = run(cal, blobs, shape, args.frames, args.workers, tmp, keep, fmt, protocol)
            report.check(r["ok"], f"{label}: {r['frames']} of {args.frames} frames processed")
            if fmt == "nxcansas-run":
                report.check(bool(r["run"]) and all(Path(p).is_file() for p in r["run"]), f"{label}: no run file")
            s = r["stages"]
            report.add(label, r["fps"], "frames/s", target, key=key,
                       note=f"decode+read {s['read'] * 1e3:.2f}, integrate {s['integrate'] * 1e3:.2f}, "
                            f"write {s['write'] * 1e3:.2f} ms/frame"
                            + (f"; raw {r['raw_mb']:.0f} MB" if keep else ""))
    report.finish()


if __name__ == "__main__":
    main()
