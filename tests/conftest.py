"""Shared test helpers.

``wait_until`` is the one way tests wait for something that happens in another thread or process: poll a predicate
until it holds or a deadline passes (never a bare ``sleep`` and hope). Tests whose outcome depends on wall-clock
time carry the ``realtime`` marker (registered in pyproject.toml): they must also pass with a CPU-bound process
beside them, and their safety assertions never loosen under load.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0, poll_s: float = 0.02) -> bool:
    """Poll ``predicate`` every ``poll_s`` seconds until it is truthy (True) or ``timeout_s`` passed (its last value,
    as a bool). Use ``assert wait_until(...)``, with a message, where not reaching the state is a failure."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return bool(predicate())
