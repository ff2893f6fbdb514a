"""``bench motion``: its baseline (the pre-issue-13 fixed 0.1 s blend) against the current scheduler on the same
chunks (FakeClock + KinematicRobot), and a short live run of the sweep itself."""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.bench.motion import done_when, run_motion_bench
from robot_stack.bench.motion_baseline import FixedBlendScheduler
from robot_stack.clock import FakeClock
from robot_stack.control.audit import stream_ratios
from robot_stack.control.executor import Executor
from robot_stack.control.safety import SafetyFilter
from robot_stack.control.scheduler import ChunkScheduler
from robot_stack.robots import panda
from robot_stack.sim.kinematic import KinematicRobot
from robot_stack.types import JointTrajectory

MS = 1_000_000


def _drive(make_scheduler) -> tuple[Executor, dict[str, float]]:
    """A policy at 10 Hz whose chunks (8 steps x 0.1 s, up to 0.75 rad/s) follow a wave around the start posture,
    each off by its own 1 cm-ish noise (consecutive chunks disagree), arriving 150 ms after their observation."""
    clock = FakeClock(start_ns=1_000 * MS)
    robot = KinematicRobot(clock=clock)
    ex = Executor(robot, clock, 500.0, SafetyFilter(panda.LIMITS), watchdog_timeout_s=0.5, history=100_000)
    ex.tick(clock.now_ns())
    t_start = clock.now_ns()
    sched = make_scheduler(ex)
    rng = np.random.default_rng(0)
    phase = np.arange(7) * 0.9
    for _ in range(12):
        t_obs = clock.now_ns()
        steps = np.arange(8) * 0.1
        t = (t_obs - t_start) * 1e-9 + steps
        q = panda.HOME_Q + 0.3 * np.sin(2.5 * t[:, None] + phase) + rng.normal(0, 0.01, (8, 7))
        traj = JointTrajectory(panda.ARM_JOINTS, t_obs + np.round(steps * 1e9).astype(np.int64), q)
        for _ in range(75):  # 150 ms of inference
            clock.advance(2 * MS)
            ex.tick(clock.now_ns())
        sched.submit(traj)
        for _ in range(50):
            clock.advance(2 * MS)
            ex.tick(clock.now_ns())
    t = np.array([r.t_ns for r in ex.history])
    return ex, stream_ratios(t, np.array([r.q_plan for r in ex.history]), panda.LIMITS)


def test_the_baseline_blend_needs_the_filter_the_current_scheduler_does_not() -> None:
    current, ratios = _drive(ChunkScheduler)
    assert current.safety.stats()["total"] == 0 and max(ratios.values()) <= 1.0, ratios
    baseline, old = _drive(FixedBlendScheduler)
    assert baseline.stats()["adopted"] >= 10  # the baseline's plans were executed as they were built
    assert baseline.safety.stats()["total"] > 0  # the fixed blend and the untimed chunks break the limits ...
    assert old["acceleration"] > 1.0 and old["jerk"] > 1.0, old  # ... before the filter
    assert baseline.stats()["plan_deviation_max_mrad"] > 0.0


def test_done_when_names_every_missed_criterion() -> None:
    good = {
        "latency_0ms_success_rate": 1.0,
        "latency_0ms_interventions_per_episode": 0.0,
        "latency_0ms_max_jerk_ratio": 0.8,
        "latency_0ms_max_acceleration_ratio": 0.9,
        "latency_0ms_max_velocity_ratio": 0.9,
        "latency_0ms_plan_vs_executed_p99_mrad": 0.0,
        "latency_0ms_unsafe_commands": 0,
    }
    assert done_when(good, (0,)) == []
    bad = {**good, "latency_0ms_interventions_per_episode": 1.5, "latency_0ms_max_jerk_ratio": 1.2}
    misses = done_when(bad, (0,))
    assert len(misses) == 2 and "interventions" in misses[0] and "jerk" in misses[1]


@pytest.mark.realtime
def test_the_sweep_runs_the_demo_stack_live_with_latency_at_the_server() -> None:
    out = run_motion_bench(
        ["task.max_duration_s=6.0"], latencies=(150,), episodes=1, baseline_latencies=(), baseline_episodes=0
    )
    assert out["latency_150ms_episodes"] == 1
    assert out["latency_150ms_round_trip_p50_ms"] >= 150.0  # the latency really was injected at the server
    # safety never loosens: feasible plans, nothing for the filter to do, nothing unsafe sent
    assert out["latency_150ms_interventions_per_episode"] == 0
    assert out["latency_150ms_unsafe_commands"] == 0
    assert out["latency_150ms_max_jerk_ratio"] <= 1.0 and out["latency_150ms_max_acceleration_ratio"] <= 1.0
    assert out["latency_150ms_plan_vs_executed_p99_mrad"] == 0.0
