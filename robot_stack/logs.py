"""Repeated log lines folded into one per cause per interval, with a count: a retry loop must not flood the log.

Three layers, each usable alone:

* :class:`RepeatFolder` decides (per cause, on an injectable clock) whether an occurrence is written now: the first
  at once, then at most one per ``interval_s``, carrying how many were folded since the previous line;
* :class:`FoldedLogger` wraps a :class:`logging.Logger` for code that knows its causes (``log.error(msg, *args,
  cause=...)``; the cause defaults to the formatted message) and can :meth:`~FoldedLogger.flush` the counts of
  causes that stopped repeating (e.g. from a 1 Hz timer);
* :class:`FoldRepeats` is a :class:`logging.Filter` for a handler: identical records (logger, level, message) pass at
  most once per interval; the next one that passes says how many were folded.

A folded line reads ``<message> (repeated 3 more times in the last 1.5 s)``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["FoldRepeats", "FoldedLogger", "RepeatFolder", "folded_suffix"]


@dataclass
class _Cause:
    last_emit_s: float
    folded: int = 0
    message: str = ""
    level: int = logging.INFO


def folded_suffix(count: int, span_s: float) -> str:
    """`` (repeated N more times in the last S s)`` for ``count`` > 0, else ``""``."""
    if count <= 0:
        return ""
    return f" (repeated {count} more time{'s' if count != 1 else ''} in the last {span_s:.1f} s)"


class RepeatFolder:
    """Per-cause rate limit that counts what it holds back (thread-safe).

    Args:
        interval_s: at most one line per cause per this many seconds.
        clock: seconds, monotonic (``time.monotonic``; a fake one in tests).
    """

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = float(interval_s)
        self.clock = clock
        self._causes: dict[Hashable, _Cause] = {}
        self._lock = threading.Lock()

    def submit(self, cause: Hashable, message: str = "", level: int = logging.INFO) -> tuple[int, float] | None:
        """One occurrence of ``cause``.

        Returns:
            None when it is folded (counted, written later), else ``(folded, span_s)``: write it now, saying that
            ``folded`` earlier occurrences were held back over the last ``span_s`` seconds (0 for a new cause).
        """
        now = self.clock()
        with self._lock:
            state = self._causes.get(cause)
            if state is None:
                self._causes[cause] = _Cause(now, 0, message, level)
                return 0, 0.0
            if now - state.last_emit_s < self.interval_s:
                state.folded += 1
                state.message, state.level = message, level
                return None
            folded, span = state.folded, now - state.last_emit_s
            state.last_emit_s, state.folded, state.message, state.level = now, 0, message, level
            return folded, span

    def due(self) -> list[tuple[Hashable, int, float, str, int]]:
        """Causes with folded occurrences whose interval has passed: ``(cause, folded, span_s, last message,
        level)`` each, now counted as written (call it periodically so that a burst's count is not lost)."""
        now = self.clock()
        out = []
        with self._lock:
            for cause, state in self._causes.items():
                if state.folded and now - state.last_emit_s >= self.interval_s:
                    out.append((cause, state.folded, now - state.last_emit_s, state.message, state.level))
                    state.last_emit_s, state.folded = now, 0
        return out

    def forget(self, cause: Hashable) -> None:
        """Drop a cause's state (e.g. the condition cleared): its next occurrence is written at once."""
        with self._lock:
            self._causes.pop(cause, None)


class FoldedLogger:
    """A logger whose repeated lines are folded per cause (see the module docstring).

    Args:
        logger: where lines go.
        interval_s, clock: as :class:`RepeatFolder`.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.folder = RepeatFolder(interval_s, clock)

    def log(self, level: int, msg: str, *args: object, cause: Hashable | None = None) -> bool:
        """Log ``msg % args`` at ``level`` unless its cause was logged less than ``interval_s`` ago; return whether
        a line was written."""
        text = msg % args if args else msg
        decision = self.folder.submit(cause if cause is not None else (level, text), text, level)
        if decision is None:
            return False
        self.logger.log(level, "%s%s", text, folded_suffix(*decision))
        return True

    def error(self, msg: str, *args: object, cause: Hashable | None = None) -> bool:
        return self.log(logging.ERROR, msg, *args, cause=cause)

    def warning(self, msg: str, *args: object, cause: Hashable | None = None) -> bool:
        return self.log(logging.WARNING, msg, *args, cause=cause)

    def info(self, msg: str, *args: object, cause: Hashable | None = None) -> bool:
        return self.log(logging.INFO, msg, *args, cause=cause)

    def flush(self) -> int:
        """Write the counts of causes that repeated and then went quiet; return how many lines were written."""
        due = self.folder.due()
        for _cause, folded, span, message, level in due:
            self.logger.log(level, "%s%s", message, folded_suffix(folded, span))
        return len(due)


class FoldRepeats(logging.Filter):
    """Handler filter: identical records (logger name, level, formatted message) pass at most once per
    ``interval_s``; the next one that passes gets the folded count appended to its message (the record is changed
    in place, so every handler after this filter sees the count). Counts of a cause that stops repeating are
    written with its next occurrence."""

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.folder = RepeatFolder(interval_s, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        decision = self.folder.submit((record.name, record.levelno, message), message, record.levelno)
        if decision is None:
            return False
        if decision[0]:
            record.msg, record.args = message + folded_suffix(*decision), None
        return True
