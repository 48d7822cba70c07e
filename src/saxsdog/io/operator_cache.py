"""On-disk cache of integration operators.

Building an operator costs about a second; loading one takes milliseconds.  Operators
are stored as uncompressed ``.npz`` files named by a SHA-256 key over everything that
affects them (geometry, bins, oversampling, polarization, mask content, algorithm
version).  The cache lives in ``$SAXSDOG_CACHE_DIR``, else ``$XDG_CACHE_HOME/saxsdog``,
else ``~/.cache/saxsdog``; ``SAXSDOG_NO_CACHE=1`` disables it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.operator import OPERATOR_FORMAT_VERSION, BinningOperator
from .atomic import atomic_output

__all__ = ["OperatorCache", "default_cache_dir", "operator_key"]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path | None:
    """The cache folder, or ``None`` when caching is disabled by the environment."""
    if os.environ.get("SAXSDOG_NO_CACHE", "").strip() not in ("", "0"):
        return None
    if os.environ.get("SAXSDOG_CACHE_DIR"):
        return Path(os.environ["SAXSDOG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "saxsdog" / "operators"


def operator_key(params: dict[str, Any], mask: np.ndarray | None) -> str:
    """SHA-256 over the build parameters (canonical JSON) and the mask bits."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": OPERATOR_FORMAT_VERSION, **params}, sort_keys=True).encode())
    if mask is not None:
        h.update(str(mask.shape).encode())
        h.update(np.packbits(np.asarray(mask, dtype=bool)).tobytes())
    return h.hexdigest()


class OperatorCache:
    """Load and store :class:`BinningOperator` objects by key.

    Parameters
    ----------
    directory
        Cache folder; created on first store.
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        """File that holds the operator of ``key``."""
        return self.directory / f"{key}.npz"

    def load(self, key: str) -> BinningOperator | None:
        """The cached operator, or ``None`` (missing or unreadable: it is rebuilt)."""
        p = self.path(key)
        if not p.is_file():
            log.debug("operator cache miss (no entry %s)", p.name)
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                correction = z["correction"] if "correction" in z.files else None
                return BinningOperator(
                    shape=tuple(meta["shape"]), n_bins=meta["n_bins"],
                    entries_per_pixel=z["entries_per_pixel"], bins=z["bins"], counts=z["counts"],
                    subpixels=meta["subpixels"], x=z["x"], correction=correction,
                    kind=meta["kind"], x_label=meta["x_label"], meta=meta["meta"],
                )
        except Exception as exc:  # a corrupt entry must never stop processing
            log.warning("ignoring unreadable cached operator %s: %s", p, exc)
            return None

    def store(self, key: str, op: BinningOperator) -> Path | None:
        """Write an operator atomically; failures are logged, not raised."""
        meta = {"shape": list(op.shape), "n_bins": op.n_bins, "subpixels": op.subpixels,
                "kind": op.kind, "x_label": op.x_label, "meta": op.meta}
        arrays = {"entries_per_pixel": op.entries_per_pixel, "bins": op.bins, "counts": op.counts,
                  "x": op.x, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        if op.correction is not None:
            arrays["correction"] = op.correction
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with atomic_output(self.path(key)) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]  # the stubs let a **dict fill allow_pickle
            return self.path(key)
        except OSError as exc:
            log.warning("cannot cache operator in %s: %s", self.directory, exc)
            return None
