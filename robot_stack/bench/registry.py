"""The registry of ``robot-stack bench <name>`` benchmarks (their statistics come from :mod:`robot_stack.metrics`).

A benchmark is a function ``run(quick: bool) -> dict`` registered under a name; the CLI prints its dict as one
JSON object. Every benchmark measures its own baseline *in the same run* and reports ratios against it, because
absolute times on shared machines are noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
