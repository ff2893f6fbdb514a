"""The live view with rerun: a saved recording is read back and its entities and timelines checked (demo, HIL with a
hold, replay); a nominal demo's log fits on one screen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robot_stack.viewer.live import LiveView
from robot_stack.viewer.readback import recording_contents

REPO = Path(__file__).resolve().parents[1]


def _has(entities: dict, path: str, *timelines: str) -> bool:
    return path in entities and set(timelines) <= entities[path].timelines


def test_demo_saves_a_recording_with_the_cell_the_robot_and_the_commands(tmp_path: Path) -> None:
    rrd = tmp_path / "demo.rrd"
    proc = subprocess.run(
        [sys.executable, "-m", "robot_stack.cli", "demo", "--episodes", "1", "--min-success", "0", "--save", str(rrd)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(log_lines) <= 20, "\n".join(log_lines)  # a nominal demo's log fits on one screen
    e = recording_contents(rrd)
    for cam in ("rgb", "depth"):
        assert _has(e, f"/world/cameras/front/{cam}", "time", "step"), sorted(e)
    assert any("Pinhole:image_from_camera" in c for c in e["/world/cameras/front"].components)  # the frustum
    assert e["/world/cameras/front"].static
    assert _has(e, "/world/points/front", "time", "step")
    assert any(p.startswith("/world/panda/visual_geometries/panda_link") for p in e)  # the URDF's meshes
    assert _has(e, "/world/robot_joints", "time", "step")  # posed by the measured joints every cycle
    assert e["/world/robot_joints"].rows >= 7 * 5
    for kind in ("measured", "commanded"):
        assert _has(e, f"/joints/panda_joint4/{kind}", "time", "step")
    assert _has(e, "/joints/panda_joint4/planned", "time")  # at the times the chunk's waypoints are meant for
    assert _has(e, "/world/chunks/tcp_path", "time", "step") and _has(e, "/world/tcp/measured", "time")
    assert "/world/task/target" in e


def test_hil_hold_events_are_in_the_recording(tmp_path: Path) -> None:
    from robot_stack.hil.harness import run_scenario
    from robot_stack.hil.scenario import load_scenario

    rrd = tmp_path / "partition.rrd"
    view = LiveView("test-hil", save=rrd)
    try:
        report = run_scenario(load_scenario(REPO / "scenarios" / "partition.yaml"), view=view)
    finally:
        view.close()
    e = recording_contents(rrd)
    assert report.metrics["holds"] >= 1  # the scenario's own check: the partition makes the executor hold
    assert _has(e, "/events", "time", "step")
    kinds = {p.rsplit("/", 1)[1] for p in e if p.startswith("/status/")}
    assert {"transport", "hold"} <= kinds  # the partition's failed cycles and the watchdog hold, as events


def test_a_view_never_stops_the_loop_and_needs_a_sink(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="save=PATH"):
        LiveView("x")
    view = LiveView("x", save=tmp_path / "a.rrd")
    view.at(1_000_000_000, 0)
    view.log_joints(measured=np.zeros(7))  # no robot logged yet: joint names unknown, nothing breaks
    view.rec.disconnect()
    view.log_event("hold", "after the sink is gone")  # logged into a closed stream: tolerated
    view.close()


def test_replay_saves_the_recorded_episode(tmp_path: Path) -> None:
    data = tmp_path / "ds"
    rec = subprocess.run(
        [sys.executable, "-m", "robot_stack.cli", "record", "--episodes", "1", "--cameras", "front", "--width", "160",
         "--height", "120", "--out", str(data), "--save", str(tmp_path / "rec.rrd")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert rec.returncode == 0, rec.stderr[-2000:]
    assert "record: 1/1 episodes (100 %)" in rec.stderr and "robot-stack record" in rec.stderr  # progress, table
    rep = subprocess.run(
        [sys.executable, "-m", "robot_stack.cli", "replay", str(data), "--save", str(tmp_path / "rep.rrd")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert rep.returncode == 0, rep.stderr[-2000:]
    for name in ("rec.rrd", "rep.rrd"):
        e = recording_contents(tmp_path / name)
        assert _has(e, "/world/cameras/front/rgb", "time") and _has(e, "/joints/panda_joint1/measured", "time")
    assert "/world/tcp/recorded" in recording_contents(tmp_path / "rep.rrd")


@pytest.mark.parametrize("model", ["ur5", "so101"])
def test_the_cell_view_draws_every_registered_arm(tmp_path: Path, model: str) -> None:
    """The monitor node and ``demo --robot`` draw the arm they drive, not a Panda: its URDF and its joints."""
    from robot_stack.robots.registry import get_embodiment
    from robot_stack.viewer.stack_view import CellView

    emb = get_embodiment(model)
    rrd = tmp_path / f"{model}.rrd"
    view = LiveView("test-arm", save=rrd)
    try:
        cell = CellView(view, model, emb.arm_joints, [])
        view.at(1_000_000_000, 0)
        cell.joints(1_000_000_000, emb.home_q)
        cell.flush()
    finally:
        view.close()
    e = recording_contents(rrd)
    assert not any("panda" in p for p in e), sorted(e)
    assert any("visual_geometries" in p for p in e), sorted(e)  # the arm's own meshes
    assert _has(e, f"/joints/{emb.arm_joints[1]}/measured", "time"), sorted(e)


def test_the_cell_view_refuses_an_unknown_arm(tmp_path: Path) -> None:
    from robot_stack.errors import ConfigError
    from robot_stack.viewer.stack_view import CellView

    view = LiveView("test-arm", save=tmp_path / "x.rrd")
    try:
        with pytest.raises(ConfigError, match="available: panda"):
            CellView(view, "kuka", ["a"], [])
    finally:
        view.close()
