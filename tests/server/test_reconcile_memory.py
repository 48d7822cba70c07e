"""The reconciliation scan (every 30 s in a server) streams the queue folder: it never holds
the folder's whole listing, whose peak stayed in the server's RSS and grew with the run
(issue 17: the coordinator's RSS flat over 100,000 frames)."""

from __future__ import annotations

import os
import types
from pathlib import Path

from saxsdog.pipeline import QueueOptions
from saxsdog.pipeline.backends import InlineBackend
from saxsdog.pipeline.sources import stream_images, walk_images
from saxsdog.server.handler import CommandHandler

from server_helpers import new_request, peak_traced_bytes

N_FILES = 4000


def _folder(root: Path, n: int) -> list[str]:
    (root / "sub").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / ("sub" if i % 4 == 0 else "") / f"img_{i:06d}_with_a_longer_name.tif"
        p.touch()
        paths.append(str(p))
    (root / ".hidden.tif").touch()
    (root / "notes.txt").touch()
    os.mkfifo(root / "fifo.tif")  # never yielded (opening a FIFO blocks)
    return paths


def test_stream_images_finds_what_walk_images_finds(tmp_path):
    paths = _folder(tmp_path / "run", 300)
    streamed = stream_images(tmp_path / "run")
    assert isinstance(streamed, types.GeneratorType)
    assert sorted(streamed) == sorted(walk_images(tmp_path / "run")[0]) == sorted(paths)
    assert sorted(stream_images(tmp_path / "run", ["sub"])) == sorted(p for p in paths if "/sub/" in p)


def test_stream_images_holds_a_few_entries_not_the_listing(tmp_path):
    _folder(tmp_path / "run", N_FILES)
    count = [0]

    def consume():
        for _ in stream_images(tmp_path / "run"):
            count[0] += 1

    listed = peak_traced_bytes(lambda: walk_images(tmp_path / "run"))
    streamed = peak_traced_bytes(consume)
    assert count[0] == N_FILES
    # the listing of 4000 paths is some 1 MB; the stream a few kB whatever the folder's size
    assert listed > 300 * N_FILES // 4, listed
    assert streamed < 64 * 1024, f"{streamed} bytes peak for {N_FILES} files"


class _NoWork:
    def __init__(self, calibration, options):
        pass

    def process(self, task):  # pragma: no cover - the test records pushes, it processes nothing
        raise AssertionError("not processed")


def test_reconcile_streams_the_folder_and_queues_the_unknown_in_order(base, data_dir, monkeypatch):
    handler = CommandHandler(base, QueueOptions(workers=1), rescan_interval=0,
                             pool_factory=InlineBackend.factory(_NoWork))
    try:
        arg, att = new_request(data_dir)
        assert handler.execute("new", arg, att)["result"] == "new queue"
        session = handler.session
        paths = _folder(base / "run", N_FILES)
        unknown = sorted(paths[::40])  # 100 images whose events were lost
        session.ledger.mark_preexisting(session.queue_id, [(p, None) for p in paths if p not in unknown])
        pushed: list[str] = []
        monkeypatch.setattr(session.queue, "push", lambda p, force=False: pushed.append(str(p)))
        found = [0]
        peak = peak_traced_bytes(lambda: found.__setitem__(0, session.reconcile()))
        assert found[0] == len(unknown) and pushed == unknown
        # the old scan listed every path (and sorted every entry) first: ~1 MB here (25 MB at 10^5);
        # now ~0.25 MB: a chunk of 500 paths asked of the ledger at a time
        assert peak < 100 * N_FILES, f"{peak} bytes peak for a scan of {N_FILES} files"
    finally:
        handler.shutdown()
