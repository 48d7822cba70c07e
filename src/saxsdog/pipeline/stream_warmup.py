"""A forked worker gets ready for stream frames before the first one arrives.

The first frame of a fresh worker used to take 50–140 ms instead of about 1.5: the
integration kernels are compiled per pixel type and the parent's warm-up integrates an
``int32`` frame (what image files give), while detector streams send ``uint32`` or
``uint16``; the decoder's compiled block loop has one variant per kind of blob
(read-only bytes, writeable shared memory); and the worker's frame buffer and its share
of the operator are touched for the first time.  Frames that arrive meanwhile wait
behind it, so at 200 Hz every worker's start showed up in the latency's 95th percentile.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["STREAM_DTYPES", "warm_up_worker"]

#: The pixel types detector streams send (Eiger and Pilatus: 32- or 16-bit counters).
STREAM_DTYPES = ("uint32", "uint16")


def warm_up_worker(processor: Any) -> None:
    """Load what a stream frame needs in this (new) worker process; best effort.

    Parameters
    ----------
    processor
        The worker's :class:`~saxsdog.pipeline.worker.ImageProcessor`: its calibration is
        integrated once per pixel type of :data:`STREAM_DTYPES` (a blank frame, in its
        reused frame buffer for the first type), with the standard deviation when the
        first real frame will have it (live curves).
    """
    import numpy as np

    from ..io import codecs

    try:
        codecs.warm_up()
        calibration = processor.calibration
        shape = tuple(calibration.shape)
        live = bool(getattr(processor.options, "keep_curves", False))
        buffer = getattr(processor, "_buffer", None)
        for k, dtype in enumerate(STREAM_DTYPES):
            if k == 0 and buffer is not None:
                image = buffer.array(shape, np.dtype(dtype))
                image.fill(0)  # its pages are faulted in now, not at the first frame
            else:
                image = np.zeros(shape, dtype=dtype)
            calibration.curves(image, stddev=live)
    except Exception:  # a warm-up only: the first frame loads what failed here itself
        log.debug("stream warm-up of the worker failed", exc_info=True)
