"""Every command that starts processes ends them on every exit path: a failure after the policy server started,
SIGTERM, Ctrl-C (issue 11 item 7). The server of each run is found by a marker path on its command line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from robot_stack.policy.manifest import DEMO_MANIFEST


def _marked_manifest(tmp_path: Path) -> Path:
    """A copy of the demo model in a folder only this test uses: its path marks the server process."""
    folder = tmp_path / f"leak-marker-{os.getpid()}"
    folder.mkdir()
    for f in DEMO_MANIFEST.parent.glob(DEMO_MANIFEST.stem + ".*"):
        shutil.copy(f, folder / f.name)
    return folder / DEMO_MANIFEST.name


def _processes_with(marker: str) -> list[int]:
    """pids (not this process) whose command line mentions ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def _demo(manifest: Path, *extra: str, stderr: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "robot_stack.cli", "demo", "--episodes", "20", "--manifest", str(manifest), *extra],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # SIGABRT dumps every thread's stack (see _stop_or_dump)
        # Ctrl-C as a terminal delivers it: an ignored SIGINT is inherited across exec, and a test run started as a
        # background job (`cmd &` in a script: SIGINT and SIGQUIT ignored) spawned a demo that ran on after SIGINT
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    return found


def _stop_or_dump(proc: subprocess.Popen[str], timeout_s: float, why: str, err_path: Path) -> None:
    """Wait for ``proc`` itself to exit (not for its pipes: a child still holding them would read as the demo
    hanging); past ``timeout_s`` abort it and fail with every thread's stack (faulthandler)."""
    children = _children(proc.pid)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=30)
        err = err_path.read_text(errors="replace")
        pytest.fail(
            f"the demo did not stop within {timeout_s:.0f} s of {why}; its threads at that moment:\n{err[-8000:]}"
        )
    alive = lambda: {pid: cmd for pid, cmd in children.items() if Path(f"/proc/{pid}").exists()}  # noqa: E731
    assert wait_until(lambda: not alive(), timeout_s=15), f"children of the demo still running: {alive()}"


def test_a_demo_failing_after_its_server_started_leaves_no_server(tmp_path: Path) -> None:
    manifest = _marked_manifest(tmp_path)
    proc = _demo(manifest, "--set", "decoder.options={bogus_option: 1}")  # fails building the decoder
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err
    assert "bad options" in err and "Traceback" not in err
    assert "policy server ready" in err  # the failure came after the server was up
    assert wait_until(lambda: not _processes_with(str(manifest.parent)), timeout_s=10), _processes_with(
        str(manifest.parent)
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_demo_stopped_by_a_signal_stops_its_server(tmp_path: Path, sig: signal.Signals) -> None:
    manifest = _marked_manifest(tmp_path)
    err_path = tmp_path / "demo.err"
    with err_path.open("w") as err:
        proc = _demo(manifest, stderr=err)
    try:
        server_started = wait_until(lambda: len(_processes_with(str(manifest.parent))) >= 2, timeout_s=120)
        assert server_started, "the demo's policy server never started"
        time.sleep(1.0)  # the loop is running
        proc.send_signal(sig)
        _stop_or_dump(proc, 60, sig.name, err_path)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (1, 130), proc.returncode
    assert wait_until(lambda: not _processes_with(str(manifest.parent)), timeout_s=15), _processes_with(
        str(manifest.parent)
    )
