"""Benchmarks: ``robot-stack bench <name> --json``. Importing this package registers the built-in ones."""

from __future__ import annotations

import importlib
import logging

from robot_stack.bench.registry import register, registry
from robot_stack.metrics import latency_stats, time_calls

__all__ = ["latency_stats", "load_builtin", "register", "registry", "time_calls"]

#: Modules that register built-in benchmarks (each imported lazily so a missing optional dep only hides one).
BUILTIN_MODULES = (
    "xyz",
    "transport",
    "executor",
    "ik",
    "decode",
    "serve",
    "capture",
    "ros",
    "record",
    "hostile",
    "motion",
    "vla",
    "fleet",
)


def load_builtin() -> dict[str, str]:
    """Import every built-in benchmark module; return {module: error} for those that failed to import."""
    failures: dict[str, str] = {}
    for name in BUILTIN_MODULES:
        try:
            importlib.import_module(f"robot_stack.bench.{name}")
        except ImportError as exc:  # a benchmark whose dependency is missing must not hide the others
            logging.getLogger("robot_stack.bench").warning("benchmark %s unavailable: %s", name, exc)
            failures[name] = str(exc)
    return failures
