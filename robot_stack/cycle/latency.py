"""The inference delay, estimated online: how long after an observation its chunk reaches the executor.

Every cycle that hands a chunk over measures its delay ``d = t_handover - t_obs`` (capture age at send + round trip
+ decoding + scheduling; robot clock). :class:`DelayEstimator` keeps the recent ones and answers with a high
quantile of them, raised at once by a slower one (a model or network that just got slow must not be
underestimated for the next cycles) and lowered only as the slow ones leave the window. Real-time chunking uses it
to tell the server how many steps of the next chunk will already be executing from the current plan
(:meth:`DelayEstimator.steps`, the ``rtc/delay_steps`` of :mod:`robot_stack.cycle.rtc`).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from robot_stack.errors import ConfigError

__all__ = ["DelayEstimator"]


class DelayEstimator:
    """Online estimate of the observation -> hand-over delay (seconds).

    Args:
        window: the most recent delays kept.
        quantile: the estimate is this quantile (0..1] of the kept delays ...
        initial_s: ... or this before any was measured (None: no estimate yet).
    """

    def __init__(self, window: int = 20, quantile: float = 0.9, initial_s: float | None = None) -> None:
        if window < 1 or not 0 < quantile <= 1:
            raise ConfigError(f"DelayEstimator: expected window >= 1 and quantile in (0, 1], got {window}, {quantile}")
        if initial_s is not None and not (math.isfinite(initial_s) and initial_s >= 0):
            raise ConfigError(f"DelayEstimator.initial_s: expected seconds >= 0 or None, got {initial_s}")
        self.quantile = float(quantile)
        self.initial_s = initial_s
        self._delays: deque[float] = deque(maxlen=int(window))
        self.count = 0

    def add(self, delay_s: float) -> None:
        """Record one measured delay (s); negative or non-finite values (clock trouble) are ignored."""
        if math.isfinite(delay_s) and delay_s >= 0:
            self._delays.append(float(delay_s))
            self.count += 1

    @property
    def estimate_s(self) -> float | None:
        """The current estimate (s): the ``quantile`` of the recent delays, at least the latest one."""
        if not self._delays:
            return self.initial_s
        recent = np.fromiter(self._delays, dtype=np.float64)
        return float(max(np.quantile(recent, self.quantile), recent[-1]))

    def steps(self, dt_s: float, horizon: int) -> int:
        """Chunk steps (of ``dt_s`` seconds, at most ``horizon``) the estimated delay covers: ``ceil(d / dt)``; 0
        without an estimate."""
        est = self.estimate_s
        if est is None or dt_s <= 0:
            return 0
        return int(min(max(math.ceil(est / dt_s - 1e-9), 0), horizon))

    def summary(self) -> dict[str, float | int | None]:
        """``estimate_ms``, ``last_ms`` and ``n`` (delays measured)."""
        est = self.estimate_s
        return {
            "estimate_ms": None if est is None else round(est * 1e3, 3),
            "last_ms": round(self._delays[-1] * 1e3, 3) if self._delays else None,
            "n": self.count,
        }
