"""Rate, latency and drop accounting for graph nodes, and the health levels they publish as diagnostics.

Each node keeps one :class:`StreamMonitor` per stream it receives or produces and turns it into a :class:`Health`
(a ROS-free ``diagnostic_msgs/DiagnosticStatus``) once a second. Levels follow ``DiagnosticStatus``: 0 OK, 1 WARN,
2 ERROR, 3 STALE.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from robot_stack.metrics import latency_stats

__all__ = ["ERROR", "OK", "STALE", "WARN", "Health", "StreamMonitor", "calibration_health", "worst"]

OK, WARN, ERROR, STALE = 0, 1, 2, 3


@dataclass(frozen=True)
class Health:
    """One component's health: a ``diagnostic_msgs/DiagnosticStatus`` without ROS.

    Attributes:
        name: ``"<node>: <component>"``.
        level: OK / WARN / ERROR / STALE (0..3).
        message: one line saying what is wrong (or ``"ok"``).
        values: key/value figures (strings, as ``KeyValue`` carries them).
        hardware_id: device identity (serial number, camera id), may be empty.
    """

    name: str
    level: int
    message: str
    values: tuple[tuple[str, str], ...] = ()
    hardware_id: str = ""

    def value(self, key: str) -> str | None:
        return dict(self.values).get(key)


def worst(reports: Iterable[Health]) -> int:
    """The worst level among ``reports`` (OK when empty)."""
    return max((r.level for r in reports), default=OK)


def _fmt(value: float) -> str:
    return f"{value:.3f}"


@dataclass
class StreamMonitor:
    """Arrival rate, latency and rejections of one message stream.

    Args:
        name: stream name in reports (e.g. ``"color image"``).
        expected_hz: nominal rate; below ``min_rate_fraction`` of it the stream is WARN. 0 = no rate check.
        max_silence_s: no message for this long is STALE (only once a first message was expected).
        window_s: rate is measured over arrivals in the last ``window_s`` seconds.
        latency_window: latency samples kept for p50/p99.
    """

    name: str
    expected_hz: float = 0.0
    max_silence_s: float = 1.0
    window_s: float = 2.0
    min_rate_fraction: float = 0.5
    latency_window: int = 512
    count: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    _arrivals: deque[int] = field(default_factory=deque)
    _latency_s: deque[float] = field(default_factory=deque)
    _last_ns: int | None = None
    _drops_reported: int = 0
    _last_drop: str = ""

    def received(self, now_ns: int, latency_s: float | None = None) -> None:
        """Count one good message at ``now_ns`` (monotonic), with its stamp→receive latency in s if known."""
        self.count += 1
        self._last_ns = now_ns
        self._arrivals.append(now_ns)
        if latency_s is not None:
            self._latency_s.append(latency_s)
            while len(self._latency_s) > self.latency_window:
                self._latency_s.popleft()
        self._trim(now_ns)

    def dropped(self, reason: str, detail: str = "") -> None:
        """Count one rejected message (``reason`` is a short key, e.g. ``"encoding"``, ``"stale"``)."""
        self.drops[reason] += 1
        self._last_drop = f"{reason}: {detail}" if detail else reason

    def _trim(self, now_ns: int) -> None:
        horizon = now_ns - int(self.window_s * 1e9)
        while self._arrivals and self._arrivals[0] < horizon:
            self._arrivals.popleft()

    def rate_hz(self, now_ns: int) -> float:
        """Messages per second over the last ``window_s`` (0 with fewer than two arrivals)."""
        self._trim(now_ns)
        if len(self._arrivals) < 2:
            return 0.0
        span = max(now_ns - self._arrivals[0], self._arrivals[-1] - self._arrivals[0])
        return (len(self._arrivals) - 1) / (span / 1e9) if span > 0 else 0.0

    def latency(self) -> dict[str, float]:
        """p50/p99/... of the kept latency samples in ms (empty without samples)."""
        if not self._latency_s:
            return {}
        return latency_stats(np.fromiter(self._latency_s, float), prefix="latency_")

    def health(self, node: str, now_ns: int) -> Health:
        """The stream's health at ``now_ns``: STALE when silent, WARN when slow or when messages were dropped
        since the previous report, else OK."""
        rate = self.rate_hz(now_ns)
        total_drops = sum(self.drops.values())
        new_drops = total_drops - self._drops_reported
        self._drops_reported = total_drops
        values = [("count", str(self.count)), ("rate_hz", _fmt(rate)), ("expected_hz", _fmt(self.expected_hz))]
        lat = self.latency()
        if lat:
            values += [("latency_p50_ms", _fmt(lat["latency_p50_ms"])), ("latency_p99_ms", _fmt(lat["latency_p99_ms"]))]
        values.append(("drops", str(total_drops)))
        values += [(f"drops_{k}", str(v)) for k, v in sorted(self.drops.items())]
        silent_s = None if self._last_ns is None else (now_ns - self._last_ns) / 1e9
        if silent_s is not None:
            values.append(("age_ms", _fmt(silent_s * 1e3)))
        if self._last_ns is None:
            level, msg = STALE, "no message yet"
        elif silent_s is not None and silent_s > self.max_silence_s:
            level, msg = STALE, f"silent for {silent_s:.1f} s"
        elif new_drops > 0:
            level, msg = WARN, f"{new_drops} dropped since last report (last {self._last_drop})"
        elif self.expected_hz > 0 and rate < self.min_rate_fraction * self.expected_hz:
            level, msg = WARN, f"rate {rate:.1f} Hz below {self.min_rate_fraction:.0%} of {self.expected_hz:.1f} Hz"
        else:
            level, msg = OK, "ok"
        return Health(f"{node}: {self.name}", level, msg, tuple(values))


def calibration_health(
    node: str,
    camera_id: str,
    created: datetime,
    valid_days: float,
    residuals: Mapping[str, float],
    now: datetime,
    method: str = "",
) -> Health:
    """Calibration age and residuals as a health report: ERROR past ``valid_days``, WARN in its last 10 %."""
    age_days = (now - created).total_seconds() / 86400.0
    values = [("age_days", _fmt(age_days)), ("valid_days", _fmt(valid_days)), ("method", method)]
    values += [(f"residual_{k}", _fmt(float(v))) for k, v in sorted(residuals.items())]
    if age_days > valid_days:
        level, msg = ERROR, f"calibration is {age_days:.1f} days old (valid {valid_days:.0f}); recalibrate"
    elif age_days > 0.9 * valid_days:
        level, msg = WARN, f"calibration expires in {valid_days - age_days:.1f} days"
    else:
        level, msg = OK, "ok"
    return Health(f"{node}: calibration {camera_id}", level, msg, tuple(values), camera_id)
