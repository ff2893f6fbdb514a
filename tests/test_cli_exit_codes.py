"""One exit-code convention for every command: 0 ok, 1 failure, 2 usage; errors are one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from robot_stack.cli import main


def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "robot_stack.cli", *argv], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("out", ["/proc/robot-stack-dataset", "FILE"])
def test_record_into_an_unwritable_path_is_one_line_and_exit_1(tmp_path: Path, out: str) -> None:
    if out == "FILE":
        out = str(tmp_path / "a-file")
        Path(out).write_text("not a folder")
    proc = _run("record", "--teleop", "expert", "--episodes", "1", "--out", out, "--cameras", "front")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and out in errors[0], proc.stderr


def test_a_bad_scenario_file_is_a_failure_not_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfaults: [{kind: meteor}]\n")
    assert main(["hil", str(bad)]) == 1


def test_usage_errors_exit_2() -> None:
    proc = _run("demo", "--episodes", "many")
    assert proc.returncode == 2 and "invalid int value" in proc.stderr
    assert _run("bench", "no-such-bench").returncode == 2
