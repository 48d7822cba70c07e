"""A restarted queue reads who wrote which output from the ledger page by page: never every
finished row at once (a peak that grew with the run and stayed in the server's RSS)."""

from __future__ import annotations


from saxsdog.pipeline.tasks import ImageResult
from saxsdog.server.ledger import Ledger
from server_helpers import peak_traced_bytes


def _fill(ledger: Ledger, n: int) -> None:
    params = {"R0": {f"p{k}": float(k) for k in range(40)}}  # rows as heavy as real ones
    for i in range(n):
        path = f"/base/run/img_{i:06d}.tif"
        ledger.mark_queued("q", path, "1:2")
        error = "cannot read" if i % 10 == 3 else None
        ledger.mark_result("q", ImageResult(path, 0, outputs=[] if error else [f"/base/work/img_{i:06d}.chi"],
                                            parameters=params, error=error), "1:2")
        if i % 7 == 0:  # a second frame's row is not the image's claim
            ledger.mark_result("q", ImageResult(path, 1, outputs=[f"/base/work/img_{i:06d}_00001.chi"]), "1:2")
    ledger.mark_queued("other", "/base/run/img_000000.tif", None)
    ledger.commit()


def test_done_outputs_gives_every_done_image_once_in_pages(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        _fill(ledger, 50)
        rows = list(ledger.done_outputs("q", chunk=4))
        expected = [(f"/base/run/img_{i:06d}.tif", f"/base/work/img_{i:06d}.chi") for i in range(50) if i % 10 != 3]
        assert rows == expected
        assert list(ledger.done_outputs("nope")) == []
    finally:
        ledger.close()


def test_done_outputs_holds_a_page_not_the_ledger(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        _fill(ledger, 4000)

        count = [0]

        def stream():
            for _ in ledger.done_outputs("q", chunk=500):
                count[0] += 1

        whole = peak_traced_bytes(lambda: ledger.history("q", limit=10_000_000))  # what a restart read before
        paged = peak_traced_bytes(stream)
        assert count[0] == 3600
        assert paged < whole / 5, (paged, whole)
    finally:
        ledger.close()


def test_the_scan_asks_the_ledger_in_a_few_statement_shapes(tmp_path, monkeypatch):
    """Every scan's last chunk has another length; each length was a new statement of up to 500
    parameters kept in the connection's statement cache: lengths are padded to powers of two."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        _fill(ledger, 20)
        statements: set[str] = set()
        real = ledger._read

        def recording(sql, params=()):
            statements.add(sql)
            return real(sql, params)

        monkeypatch.setattr(ledger, "_read", recording)
        known = [f"/base/run/img_{i:06d}.tif" for i in range(20)]
        for n in range(1, 300, 7):  # 43 scans of folders of different sizes
            paths = known[: n % 20] + [f"/base/run/new_{i:06d}.tif" for i in range(n)]
            assert list(ledger.unknown("q", paths, chunk=128)) == paths[n % 20:]
        assert len(statements) <= 8, len(statements)  # 1, 2, 4 ... 128 parameters
    finally:
        ledger.close()
