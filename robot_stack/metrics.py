"""Latency figures: per-stage bookkeeping for long-running loops, and the percentile summaries every benchmark and
statistics counter reports (``<prefix>p50_ms`` ...)."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np


class StageTimes:
    """Keeps the last ``maxlen`` durations (seconds) of each named stage; summarises them as p50/p99 ms."""

    def __init__(self, maxlen: int = 100_000) -> None:
        self._samples: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=maxlen))
        self._order: list[str] = []

    def add(self, stage: str, seconds: float) -> None:
        """Record one duration of ``stage`` in seconds."""
        if stage not in self._samples:
            self._order.append(stage)
        self._samples[stage].append(float(seconds))

    def extend(self, stage: str, seconds: list[float] | np.ndarray) -> None:
        for s in seconds:
            self.add(stage, float(s))

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """``with times.measure("capture"): ...`` records the block's wall time."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {"n", "p50_ms", "p99_ms", "mean_ms", "max_ms"}} in first-seen stage order."""
        out: dict[str, dict[str, float]] = {}
        for stage in self._order:
            ms = np.asarray(self._samples[stage]) * 1e3
            if ms.size == 0:
                continue
            out[stage] = {
                "n": int(ms.size),
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "mean_ms": float(ms.mean()),
                "max_ms": float(ms.max()),
            }
        return out


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 3) -> np.ndarray:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; return (repeats,) float64 seconds per call."""
    for _ in range(warmup):
        fn()
    samples = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        samples[i] = (time.perf_counter_ns() - t0) / 1e9
    return samples


def latency_stats(samples_s: np.ndarray, prefix: str = "") -> dict[str, float]:
    """p50/p90/p99/mean/max in milliseconds (keys ``<prefix>p50_ms`` ...) and the sample count."""
    s = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {
        f"{prefix}p50_ms": round(float(np.percentile(s, 50)), 4),
        f"{prefix}p90_ms": round(float(np.percentile(s, 90)), 4),
        f"{prefix}p99_ms": round(float(np.percentile(s, 99)), 4),
        f"{prefix}mean_ms": round(float(s.mean()), 4),
        f"{prefix}max_ms": round(float(s.max()), 4),
        f"{prefix}n": int(s.size),
    }
