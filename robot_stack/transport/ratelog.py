"""Rate-limited logging for input a peer controls: one line per event up to a budget, then a count.

A hostile or broken client can send thousands of bad messages a second; a log line (let alone a traceback) for
each would turn the log into the attack's amplifier. :class:`RateLimitedLog` logs at most ``burst`` lines per
``interval_s`` per key and folds the rest into the next line's ``(+N more since ...)``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Log through ``logger``, at most ``burst`` lines per ``interval_s`` for each key (e.g. an error code).

    Args:
        logger: where lines go.
        burst: lines per key and interval.
        interval_s: the window, seconds.
        clock: monotonic seconds (tests may pass a fake).
    """

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = 5,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = int(burst)
        self.interval_s = float(interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._window: dict[str, tuple[float, int, int]] = {}  # key -> (window start, lines logged, suppressed)

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless ``key`` used up its budget (then count it); True if a line was written."""
        now = self._clock()
        with self._lock:
            start, logged, suppressed = self._window.get(key, (now, 0, 0))
            if now - start >= self.interval_s:
                start, logged = now, 0
            if logged >= self.burst:
                self._window[key] = (start, logged, suppressed + 1)
                return False
            self._window[key] = (start, logged + 1, 0)
        if suppressed:
            msg += " (+%d more %s since the last line)"
            args = (*args, suppressed, key)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True
