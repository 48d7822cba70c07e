"""Collapse floods of identical log lines (an attack must not fill the disk through the log).

The servers put a :class:`RepeatFilter` on their log handlers right after configuring
logging: about a thousand idle connections once made asyncio log the same accept error
in a loop, 88 MB in 32 s.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["RepeatFilter", "install_repeat_filter"]

class RepeatFilter(logging.Filter):
    """Let through ``burst`` records of one kind per ``window`` seconds, then count them.

    A kind is (logger, level, message template), so "refused login from %s" from many
    addresses is one kind. The first record of a kind after a window in which some were
    held back says how many were.

    Parameters
    ----------
    window
        Length of the counting window, seconds.
    burst
        Records of one kind passed per window.
    max_kinds
        Kinds remembered (the table is cleared beyond it).
    """

    def __init__(self, window: float = 10.0, burst: int = 5, max_kinds: int = 1000):
        super().__init__()
        self.window = window
        self.burst = burst
        self.max_kinds = max_kinds
        self._kinds: dict[tuple[str, int, str], list[float | int]] = {}  # -> [window start, passed, held]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            state = self._kinds.get(key)
            if state is None:
                if len(self._kinds) >= self.max_kinds:
                    self._kinds.clear()
                state = self._kinds[key] = [now, 0, 0]
            held = 0
            if now - state[0] >= self.window:
                held = int(state[2])
                state[0], state[1], state[2] = now, 0, 0
            if state[1] >= self.burst:
                state[2] += 1
                return False
            state[1] += 1
        if held:
            record.msg = f"{record.getMessage()} [{held} more like this in the previous {self.window:g} s]"
            record.args = None
        return True


def install_repeat_filter(logger: logging.Logger | None = None, **options: float) -> RepeatFilter:
    """Put one :class:`RepeatFilter` on every handler of ``logger`` (the root logger by default).

    On the handlers, not the loggers, so that records propagated from any logger (uvicorn's,
    asyncio's accept errors, the login warnings) are counted; call it after
    ``logging.basicConfig``. Returns the filter.
    """
    target = logger or logging.getLogger()
    flt = RepeatFilter(**options)  # type: ignore[arg-type]
    for handler in target.handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
