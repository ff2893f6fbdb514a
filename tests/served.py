"""Test helper (not a test file): the real policy server (``policy.service.serve``) on a loopback port in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def served(manifest: Path, threads: int = 1, start_timeout_s: float = 60.0) -> Iterator[str]:
    """Serve ``manifest`` on ``tcp://127.0.0.1:*`` (CPU) for the ``with`` block; yields the bound endpoint.

    Raises AssertionError when the server does not come up within ``start_timeout_s``; on exit the server is stopped
    and its thread must end within 10 s.
    """
    from robot_stack.policy.service import serve

    ready, stop, endpoint = threading.Event(), threading.Event(), []

    def on_ready(bound: str) -> None:
        endpoint.append(bound)
        ready.set()

    thread = threading.Thread(
        target=serve,
        args=(manifest, "tcp://127.0.0.1:*", "cpu"),
        kwargs={"threads": threads, "on_ready": on_ready, "stop_event": stop},
        daemon=True,
    )
    thread.start()
    try:
        assert ready.wait(start_timeout_s), f"policy server for {manifest} did not start in {start_timeout_s} s"
        yield endpoint[0]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive(), "policy server thread did not stop"
