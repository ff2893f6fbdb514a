"""One clock per process: monotonic nanoseconds, and a fake twin for deterministic tests."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Source of monotonic time in ns, and a way to wait until an absolute time."""

    def now_ns(self) -> int: ...

    def sleep_until(self, t_ns: int) -> None: ...


class MonotonicClock:
    """The process clock: ``time.monotonic_ns``.

    ``sleep_until`` sleeps to within ``spin_ns`` of the deadline and then spins, so that absolute-deadline loops
    wake up late by microseconds rather than by the scheduler's slack.
    """

    def __init__(self, spin_ns: int = 200_000) -> None:
        self.spin_ns = spin_ns

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until(self, t_ns: int) -> None:
        remaining = t_ns - time.monotonic_ns()
        if remaining > self.spin_ns:
            time.sleep((remaining - self.spin_ns) / 1e9)
        while time.monotonic_ns() < t_ns:
            time.sleep(0)  # yield the GIL while spinning


class FakeClock:
    """A clock that only moves when told to; ``sleep_until`` jumps straight to the deadline. Thread-safe."""

    def __init__(self, start_ns: int = 0) -> None:
        self._t = start_ns
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        with self._lock:
            return self._t

    def advance(self, dt_ns: int) -> None:
        with self._lock:
            self._t += dt_ns

    def sleep_until(self, t_ns: int) -> None:
        with self._lock:
            self._t = max(self._t, t_ns)
