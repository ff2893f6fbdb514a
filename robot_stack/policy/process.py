"""A policy server in its own process: start ``python -m robot_stack.policy.service`` (or a module with the same
command line), wait for its ``READY <endpoint>`` line, stop it on every exit path.

The robot-side entry points (demo, hardware-in-the-loop harness, evaluation) start their server through here.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from robot_stack.errors import TransportError

__all__ = ["free_port", "start_server", "stop_server"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    manifest: Path,
    provider: str,
    threads: int | None = None,
    timeout_s: float = 60.0,
    *,
    module: str = "robot_stack.policy.service",
    bind: str | None = None,
    extra_args: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m <module>`` (default the policy service) on ``bind`` (default a free loopback port);
    wait for its READY line. ``extra_args`` go after the standard flags, ``prefix`` before the interpreter (e.g.
    ``unshare --time ...``); the hardware-in-the-loop harness uses both."""
    endpoint = bind or f"tcp://127.0.0.1:{free_port()}"
    cmd = [*prefix, sys.executable, "-m", module, "--manifest", str(manifest), "--bind", endpoint]
    if provider:
        cmd += ["--provider", provider]
    if threads:
        cmd += ["--threads", str(threads)]
    cmd += list(extra_args)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TransportError(f"policy server exited with code {proc.returncode} before it was ready: {cmd}")
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline().strip()
            if line.startswith("READY"):
                return proc, line.split()[1] if len(line.split()) > 1 else endpoint
    proc.kill()
    raise TransportError(f"policy server not ready after {timeout_s:.0f} s: {cmd}")


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
