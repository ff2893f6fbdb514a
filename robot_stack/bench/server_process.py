"""Benchmark servers in their own process (so the client's timings do not share its interpreter): start one with
``python -m <module> <args...>``, wait for its ``READY <endpoint>`` line, and stop it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence


def start_server(module: str, args: Sequence[str], what: str) -> tuple[subprocess.Popen[str], str]:
    """Run ``python -m module *args`` single-threaded (``OMP_NUM_THREADS=1``) and return the process and the
    endpoint from its first stdout line, ``READY <endpoint>``.

    Raises:
        RuntimeError: the first line was something else (the process is killed); ``what`` names the server.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"{what} bench server failed to start (got {line!r})")
    return proc, line.split()[1]


def stop_server(proc: subprocess.Popen[str]) -> None:
    """Terminate, wait up to 5 s, then kill."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
