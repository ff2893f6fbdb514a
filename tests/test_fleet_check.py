"""The fleet check's parts that need no Ray: robot specs, the verdict on two runs, and one simulated robot whose
policy server dies mid-episode (it must hold safe). The whole check, against a Ray fleet with a replica killed,
runs in tests/test_fleet.py on that module's Ray instance."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from robot_stack.errors import ConfigError
from robot_stack.hil.fleet_check import FleetRun, KillRecord, compare_runs, parse_robots
from robot_stack.hil.fleet_robot import EpisodeOutcome, RobotRun, RobotSpec, run_robot
from tests.conftest import wait_until


def test_robot_specs_name_arm_model_and_a_unique_id() -> None:
    specs = parse_robots("panda, so101:reach-xemb/reach-xemb-vq,panda:reach-touch-v1")
    assert [(s.arm, s.model_id, s.robot_id) for s in specs] == [
        ("panda", "reach-xemb-vq", "panda-0"),
        ("so101", "reach-xemb-vq", "so101-1"),
        ("panda", "reach-touch-v1", "panda-2"),
    ]
    assert specs[0].manifest == specs[1].manifest and specs[0].manifest.endswith("reach-xemb-vq.yaml")
    with pytest.raises(ConfigError, match="ur10"):
        parse_robots("ur10")
    with pytest.raises(ConfigError, match="no policy manifest"):
        parse_robots("panda:no-such-model")
    with pytest.raises(ConfigError, match="ARM"):
        parse_robots(" , ")


def _run(spec: RobotSpec, successes: tuple[bool, ...], actions: float = 0.0, **counters: object) -> RobotRun:
    episodes = tuple(EpisodeOutcome(1000 + i, ok, 30, 3.0, 10.0) for i, ok in enumerate(successes))
    chunks = tuple((np.full((8, 3), actions, np.float32),) * 3 for _ in successes)
    return RobotRun(spec, "tcp://127.0.0.1:1", episodes, requests=90, answered=90, actions=chunks, **counters)  # type: ignore[arg-type]


SPEC = RobotSpec("panda", "/m/reach-touch-v1.yaml", "reach-touch-v1", "panda-0")
KILL = KillRecord("reach-touch-v1", "abc", 1234, 1.1, 1, 1.0, 40, 3.0, True, 1, 1, 9.5)


def _verdict(single: RobotRun, fleet: RobotRun, kill: KillRecord | None = KILL, **kw: object) -> dict[str, bool]:
    rows, checks = compare_runs(
        FleetRun("single", (single,), {}), FleetRun("fleet", (fleet,), {}, kill=kill), kill_replica=True, **kw
    )
    assert len(rows) == 1
    return {c.name: c.ok for c in checks}


def test_equal_clean_runs_pass_and_the_comparison_counts_identical_chunks() -> None:
    a, b = _run(SPEC, (True, False)), _run(SPEC, (True, False))
    assert all(_verdict(a, b).values())
    rows, _ = compare_runs(FleetRun("single", (a,), {}), FleetRun("fleet", (b,), {}), kill_replica=False)
    assert rows[0]["identical_steps"] == rows[0]["compared_steps"] == 6 and rows[0]["max_abs_diff"] == 0.0
    rows, _ = compare_runs(
        FleetRun("single", (a,), {}), FleetRun("fleet", (_run(SPEC, (True, False), 1e-7),), {}), kill_replica=False
    )
    assert rows[0]["identical_steps"] == 0 and 0 < rows[0]["max_abs_diff"] < 1e-6


@pytest.mark.parametrize(
    "counter",
    [
        {"interventions": 1},
        {"unsafe_commands": 2, "unsafe_by_limit": {"jerk": 2}},
        {"outside_box_commands": 1},
        {"stale_replies": 1},
    ],
)
def test_any_safety_counter_above_zero_fails_the_check(counter: dict[str, object]) -> None:
    clean = _run(SPEC, (True,))
    verdict = _verdict(clean, _run(SPEC, (True,), **counter))
    assert verdict["panda-0 fleet: safety counters"] is False
    assert verdict["panda-0 single: safety counters"] is True
    assert _verdict(_run(SPEC, (True,), **counter), clean)["panda-0 single: safety counters"] is False


def test_a_lost_request_a_changed_outcome_or_a_missing_kill_fails_the_check() -> None:
    clean = _run(SPEC, (True, True))
    lost = dataclasses.replace(clean, answered=89, failed={"timeout": 1}, held_steps=1)
    assert _verdict(clean, lost)["panda-0 fleet: every request answered"] is False
    changed = _run(SPEC, (True, False))
    assert _verdict(clean, changed)["panda-0: same episode outcomes"] is False
    assert _verdict(clean, changed, success_tolerance=1)["panda-0: same episode outcomes"] is True
    assert _verdict(clean, clean, kill=None)["replica killed while the robots ran"] is False
    not_replaced = dataclasses.replace(KILL, replaced_after_s=None)
    assert _verdict(clean, clean, kill=not_replaced)["killed replica replaced"] is False
    after_the_run = dataclasses.replace(KILL, during_run=False)
    assert _verdict(clean, clean, kill=after_the_run)["replica killed while the robots ran"] is False
    idle = dataclasses.replace(KILL, held_calls=0, held_s=0.0)
    assert _verdict(clean, clean, kill=idle)["the killed replica held requests"] is False


def test_a_robot_whose_server_dies_mid_episode_holds_safe() -> None:
    """The real server and client, the so101 cell in lockstep: the server answers a few steps, then goes away;
    every later request times out, the arm finishes its plan and the watchdog holds it, with no unsafe command."""
    from robot_stack.policy.manifest import PolicyManifest
    from robot_stack.policy.service import PolicyService
    from robot_stack.transport.server import PolicyServer

    spec = parse_robots("so101")[0]
    service = PolicyService.from_manifest(PolicyManifest.load(spec.manifest), "cpu", threads=1)
    server = PolicyServer(service, "tcp://127.0.0.1:*").start()
    out: dict[str, RobotRun] = {}
    robot = threading.Thread(
        target=lambda: out.setdefault(
            "run", run_robot(spec, server.endpoint, 1, 1000, timeout_s=0.2, max_duration_s=1.5)
        )
    )
    robot.start()
    try:
        assert wait_until(lambda: server.stats()["infer_ok"] >= 4, timeout_s=60), server.stats()
    finally:
        server.close()
    robot.join(120)
    run = out["run"]
    assert 4 <= run.answered < run.requests == 15
    assert run.failed == {"timeout": run.requests - run.answered} and run.held_steps == run.requests - run.answered
    assert run.holds >= 1, "the watchdog should have held the arm once its plan ran out"
    assert run.safety_counters == {
        "interventions": 0,
        "unsafe_commands": 0,
        "outside_box_commands": 0,
        "stale_replies": 0,
    }
    assert run.commands > 0 and len(run.actions[0]) == run.answered
