"""``robot-stack up`` prints a summary on exit (episodes, successes, holds, restarts) and records the graph with
``--save`` (the monitor process: real rclpy, the sim graph on an isolated loopback domain)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robot_stack.graph.monitor import GraphMonitor, read_summary

REPO = Path(__file__).resolve().parents[1]


def test_monitor_counts_episodes_successes_and_holds(tmp_path: Path) -> None:
    m = GraphMonitor()
    assert m.summary() == {"episodes": None, "successes": None, "timeouts": None, "holds": 0}  # no task: unknown
    for state in ("idle", "tracking", "holding", "holding", "tracking", "holding"):
        m.on_executor_state(state, 0)
    m.on_task_status({"episode": "0", "touches": "0", "timeouts": "0"})
    m.on_task_status({"episode": "2", "touches": "2", "timeouts": "1"})
    m.on_task_status({"episode": "x"})  # malformed: ignored
    m.on_joint_state(0, np.zeros(7))  # no view: nothing to show, nothing breaks
    m.write(tmp_path / "s.json")
    assert read_summary(tmp_path / "s.json") == {"episodes": 3, "successes": 2, "timeouts": 1, "holds": 2}
    assert read_summary(tmp_path / "missing.json") is None


@pytest.mark.realtime
def test_up_prints_its_summary_and_saves_the_graph(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    from ros_graph_probe import unique_domain_id

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rrd = tmp_path / "up.rrd"
    proc = subprocess.run(
        [sys.executable, "-m", "robot_stack.cli", "up", "sim", f"policy_endpoint:=tcp://127.0.0.1:{port}",
         "--duration", "30", "--save", str(rrd), "--localhost", "--domain-id", str(unique_domain_id()),
         "--log-dir", str(tmp_path / "logs"), "-q"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stderr
    for row in ("episodes", "successes", "watchdog holds", "restarts"):
        assert row in table, table
    episodes = int(next(line for line in table.splitlines() if "│ episodes" in line).split("│")[2])
    assert episodes >= 1
    from robot_stack.viewer.readback import recording_contents

    e = recording_contents(rrd)
    assert "time" in e["/joints/panda_joint1/measured"].timelines and e["/joints/panda_joint1/measured"].rows > 50
    assert "/world/cameras/front/rgb" in e and "/world/chunks/tcp_path" in e
