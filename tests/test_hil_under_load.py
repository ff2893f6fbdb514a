"""HIL safety with two CPU hogs beside it (issue 11 item 11): what must never happen on a busy machine.

Two CPU-bound processes (one per core of the 2-core CI machine) run beside the full stack (policy server
subprocess, proxy, sim cell, real-time executor process) for the whole run. One short scenario combines the
faults that broke safety checks under load before: the policy drives the TCP toward a target outside the
workspace box, then frames arrive 400 ms late and frozen. The safety figures must stay exactly as on a quiet
machine: 0 unsafe commands, the commanded TCP never outside the box (0.0 mm: targets are kept inside by
construction, not by timing), 0 actions executed from stale data (observation ages measured when sent, never
estimated). Liveness figures (task success, time to hold or recover) may suffer under that stress and are not
asserted; ``scenarios/`` holds them on a normal machine.
"""

from __future__ import annotations

import pytest

from robot_stack.bench.load import cpu_hogs
from robot_stack.hil import load_scenario, run_scenario

pytestmark = pytest.mark.realtime  # wall-clock: the stack runs live on the real clock, under load on purpose

STRESS = """\
name: safety-under-load
description: two CPU hogs beside the stack; the policy reaches out of the workspace box, then late and frozen frames
seed: 8
duration_s: 4.5
workspace: {lower: [0.15, -0.45, 0.01], upper: [0.70, 0.45, 0.80]}
faults:
  - {kind: policy, mode: reach, target: [0.82, 0.0, 0.08], speed_m_per_step: 0.05, start_s: 0.2, end_s: 2.0}
  - {kind: camera, mode: late, late_ms: 400, start_s: 2.1, end_s: 2.5}
  - {kind: camera, mode: frozen, start_s: 2.6, end_s: 3.0}
"""


def test_safety_holds_with_two_cpu_hogs_beside_the_stack(tmp_path) -> None:
    path = tmp_path / "safety-under-load.yaml"
    path.write_text(STRESS)
    scenario = load_scenario(path)
    with cpu_hogs(2) as hogs:
        report = run_scenario(scenario)
        assert all(h.poll() is None for h in hogs), "a hog ended early: the run was not under load"
    assert all(h.poll() is not None for h in hogs)  # and none outlives the test
    m = report.metrics
    assert m["commands"] > 1500  # >= 3 s of 500 Hz control really ran, through every fault window
    assert m["unsafe_commands"] == 0, m["unsafe_by_limit"]
    assert m["tcp_outside_workspace_m"] == 0.0
    assert m["actions_from_stale_data"] == 0
    assert sum(m["stale"].values()) >= 1  # stale frames really reached the guard and were refused
