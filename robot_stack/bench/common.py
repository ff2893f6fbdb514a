"""Shared machinery of ``robot-stack bench <name>``: a registry of benchmarks and latency statistics.

A benchmark is a function ``run(quick: bool) -> dict`` registered under a name; the CLI prints its dict as one
JSON object. Every benchmark measures its own baseline *in the same run* and reports ratios against it, because
absolute times on shared machines are noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

BenchFn = Callable[[bool], dict[str, Any]]
_REGISTRY: dict[str, BenchFn] = {}


def register(name: str) -> Callable[[BenchFn], BenchFn]:
    """Decorator: make ``fn`` available as ``robot-stack bench <name>``."""

    def wrap(fn: BenchFn) -> BenchFn:
        _REGISTRY[name] = fn
        return fn

    return wrap


def registry() -> dict[str, BenchFn]:
    """All registered benchmarks (importing :mod:`robot_stack.bench` registers the built-in ones)."""
    return dict(_REGISTRY)


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
