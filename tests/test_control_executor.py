"""Executor driven deterministically with FakeClock + KinematicRobot: tracking, watchdog hold, resume, rejects."""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.clock import FakeClock
from robot_stack.control.audit import stream_ratios
from robot_stack.control.executor import Executor, ExecutorState
from robot_stack.control.plan import MotionPlan
from robot_stack.control.safety import SafetyFilter
from robot_stack.robots import panda
from robot_stack.sim.kinematic import KinematicRobot
from robot_stack.types import JointTrajectory

NAMES = panda.ARM_JOINTS
MS = 1_000_000
PERIOD = 2 * MS  # 500 Hz
LIM = panda.LIMITS


@pytest.fixture()
def rig():
    clock = FakeClock(start_ns=1_000 * MS)
    robot = KinematicRobot(clock=clock, history=100_000)
    ex = Executor(robot, clock, rate_hz=500.0, watchdog_timeout_s=0.3, history=100_000)
    return clock, robot, ex


def _run(clock: FakeClock, ex: Executor, n: int) -> np.ndarray:
    out = []
    for _ in range(n):
        clock.advance(PERIOD)
        out.append(ex.tick(clock.now_ns()))
    return np.array(out)


def _moving_traj(t0_ns: int, duration_s: float, speed: float = 0.5, start: np.ndarray | None = None) -> JointTrajectory:
    """Every joint moves at ``speed`` rad/s (a straight line), waypoints every 100 ms."""
    start = panda.HOME_Q if start is None else start
    t = np.arange(0.0, duration_s + 1e-9, 0.1)
    pos = start + np.outer(t * speed, np.ones(7))
    return JointTrajectory(NAMES, t0_ns + np.round(t * 1e9).astype(np.int64), pos)


def _plan_stream(ex: Executor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.array([r.t_ns for r in ex.history])
    return t, np.array([r.q_plan for r in ex.history]), np.array([r.q_sent for r in ex.history])


def _assert_feasible_and_unfiltered(ex: Executor) -> None:
    """The plan's set-points are within every limit and the safety filter changed none of them."""
    t, q_plan, q_sent = _plan_stream(ex)
    ratios = stream_ratios(t, q_plan, LIM)
    assert max(ratios.values()) <= 1.0, ratios
    assert ex.safety.stats()["total"] == 0
    np.testing.assert_array_equal(q_plan, q_sent)


def test_follows_a_trajectory(rig):
    clock, robot, ex = rig
    _run(clock, ex, 5)  # idle: holds the start position
    np.testing.assert_allclose(robot.read_state().q, panda.HOME_Q)
    assert ex.state == ExecutorState.IDLE
    # a slow smooth trajectory starting where the robot is
    t0 = clock.now_ns()
    t = np.linspace(0.0, 1.0, 11)
    pos = panda.HOME_Q + 0.2 * np.outer(np.sin(np.pi * t) ** 2, np.ones(7))
    traj = JointTrajectory(NAMES, t0 + np.round(t * 1e9).astype(np.int64), pos)
    assert ex.set_trajectory(traj)
    cmds = _run(clock, ex, 450)
    assert ex.state == ExecutorState.TRACKING
    # the policy's own timing is within the limits, so the plan is its C2 spline; the robot starts at rest while
    # the spline starts with its first secant: a ruckig transition joins it, after which the commands are the
    # spline itself
    timed = ex.planner.time(traj)
    assert timed.method == "nominal"
    times = np.array([t0 + (k + 1) * PERIOD for k in range(450)])
    expected, _, _ = timed.plan.sample_many(times)
    assert ex.stats()["joins"] == 1
    np.testing.assert_allclose(cmds[100:], expected[100:], atol=1e-9)
    np.testing.assert_allclose(cmds[:100], expected[:100], atol=5e-3)
    np.testing.assert_allclose(robot.read_state().q, cmds[-1])
    _assert_feasible_and_unfiltered(ex)
    assert ex.safety.stats()["calls"] == 455


def test_watchdog_decelerates_within_limits_then_holds_and_resumes(rig):
    clock, robot, ex = rig
    _run(clock, ex, 1)
    t0 = clock.now_ns()
    assert ex.set_trajectory(_moving_traj(t0, 0.5, speed=1.0))
    _run(clock, ex, 250)  # 0.5 s: reaches the end of the policy's steps at full speed
    _, v_prev, _ = ex.commanded
    assert np.all(np.abs(v_prev) > 0.9)  # moving at ~1 rad/s when the policy's steps run out
    end_ns = t0 + 500 * MS
    robot.commands.clear()
    cmds = _run(clock, ex, 400)  # 0.8 s with no new trajectory
    t, q_plan, _ = _plan_stream(ex)
    v = np.diff(q_plan[-401:], axis=0) / 0.002
    speed = np.abs(v)
    # the extension brings the arm to rest along its motion: speed decreases monotonically to zero
    assert np.all(np.diff(speed, axis=0) <= 1e-9)
    assert np.all(speed[-50:] == 0.0)
    _assert_feasible_and_unfiltered(ex)
    # the watchdog fired 0.3 s after the policy's last step
    assert ex.state == ExecutorState.HOLDING and ex.stats()["holds"] == 1 and ex.stats()["extensions"] == 1
    # robot received every command, and the hold is a constant set-point
    assert len(robot.commands) == 400
    np.testing.assert_array_equal(cmds[-1], cmds[-50])
    assert clock.now_ns() - end_ns >= 300 * MS
    # resume: a new trajectory from the held position
    hold_q = cmds[-1]
    assert ex.set_trajectory(_moving_traj(clock.now_ns(), 0.5, speed=-0.3, start=hold_q))
    more = _run(clock, ex, 100)
    assert ex.state == ExecutorState.TRACKING
    assert np.all(more[-1] < hold_q - 0.02)  # moving again, in the new direction
    _assert_feasible_and_unfiltered(ex)


def test_watchdog_state_sequence_timing(rig):
    clock, _, ex = rig
    _run(clock, ex, 1)
    t0 = clock.now_ns()
    ex.set_trajectory(_moving_traj(t0, 0.2, speed=0.2))
    _run(clock, ex, 100)  # exactly reaches t0 + 0.2 s, the policy's last step
    assert ex.state == ExecutorState.TRACKING
    plan_end = ex.active_plan.end_ns  # the extension comes to rest here
    assert plan_end > t0 + 200 * MS
    while clock.now_ns() + PERIOD <= plan_end:
        _run(clock, ex, 1)
        assert ex.state == ExecutorState.TRACKING
    _run(clock, ex, 1)
    assert ex.state == ExecutorState.STOPPING
    while clock.now_ns() + PERIOD < t0 + 500 * MS:  # the watchdog counts 0.3 s from the policy's last step
        _run(clock, ex, 1)
        assert ex.state == ExecutorState.STOPPING
    _run(clock, ex, 1)
    assert ex.state == ExecutorState.HOLDING


def test_stale_and_invalid_trajectories_rejected(rig, caplog):
    clock, _, ex = rig
    _run(clock, ex, 10)
    now = clock.now_ns()
    stale = _moving_traj(now - 500 * MS, 0.3)  # ended 200 ms ago
    assert not ex.set_trajectory(stale)
    wrong = JointTrajectory(tuple(f"j{i}" for i in range(7)), np.array([now, now + MS]), np.zeros((2, 7)))
    assert not ex.set_trajectory(wrong)
    assert not ex.set_trajectory("not a trajectory")  # type: ignore[arg-type]
    moving_end = MotionPlan.from_scipy(NAMES, now, _spline_line())
    assert not ex.set_plan(moving_end)  # does not end at rest
    assert ex.stats()["trajectories_rejected"] == {"stale": 1, "joints": 1, "type": 1, "not_at_rest": 1}
    assert any("stale" in r.getMessage() for r in caplog.records)
    # a trajectory whose policy steps expire between hand-over and pick-up is rejected at the tick
    assert ex.set_trajectory(_moving_traj(now - 290 * MS, 0.3))
    clock.advance(50 * MS)
    ex.tick(clock.now_ns())
    assert ex.stats()["trajectories_rejected"]["stale"] == 2
    assert ex.state == ExecutorState.IDLE


def _spline_line():
    from scipy.interpolate import CubicSpline

    s = np.array([0.0, 0.1, 0.2])
    return CubicSpline(s, panda.HOME_Q + np.outer(s, np.ones(7)), axis=0)


def test_a_new_trajectory_is_joined_within_the_limits(rig):
    clock, _, ex = rig
    _run(clock, ex, 1)
    t0 = clock.now_ns()
    ex.set_trajectory(_moving_traj(t0, 1.0, speed=0.5))
    a = _run(clock, ex, 100)
    # a new trajectory that disagrees by 0.03 rad and moves the other way
    ex.set_trajectory(_moving_traj(clock.now_ns(), 1.0, speed=-0.5, start=a[-1] + 0.03))
    _run(clock, ex, 300)
    _assert_feasible_and_unfiltered(ex)
    st = ex.stats()
    assert st["trajectories_accepted"] == 2 and st["joins"] == 2
    # the plan lands on the new trajectory and then follows it exactly
    target = ex.planner.chunk_plan(_moving_traj(t0 + 200 * MS, 1.0, speed=-0.5, start=a[-1] + 0.03))
    t_late = clock.now_ns()
    np.testing.assert_allclose(ex.commanded[0], target.sample(t_late).q, atol=1e-9)


def test_bad_safety_period_is_reset_and_threaded_loop_runs_with_fake_clock():
    clock = FakeClock()
    robot = KinematicRobot(clock=clock)
    safety = SafetyFilter(robot.limits, period_s=0.01)
    ex = Executor(robot, clock, rate_hz=1000.0, safety=safety)
    assert safety.period_s == pytest.approx(0.001)
    ex.set_trajectory(_moving_traj(clock.now_ns(), 0.2, speed=0.2))
    ex.start()  # FakeClock.sleep_until jumps to each deadline: the thread runs as fast as it can
    deadline = clock.now_ns() + 50 * MS
    while clock.now_ns() < deadline:
        pass
    ex.stop()
    st = ex.stats()
    assert ex.state == ExecutorState.STOPPED
    assert st["ticks"] >= 50 and st["skipped_ticks"] == 0
    assert st["lateness_max_ms"] == 0.0  # a fake clock never oversleeps
    _, v, a = ex.commanded
    assert np.all(v == 0.0) and np.all(a == 0.0)  # stop() brought the plan to rest before the thread ended
    assert st["safety"]["total"] == 0


def test_extension_beyond_the_policy_end_is_followed_but_the_watchdog_counts_from_the_policy_end(rig):
    clock, _, ex = rig  # watchdog 0.3 s
    _run(clock, ex, 1)
    t0 = clock.now_ns()
    traj = _moving_traj(t0, 1.0, speed=0.1)  # covers 1 s, but the policy's own steps end after 0.2 s
    assert ex.set_trajectory(traj, policy_end_ns=t0 + 200 * MS)
    _run(clock, ex, 100 + 149)  # 0.298 s after the policy end: still following the rest of the trajectory
    assert ex.state == ExecutorState.TRACKING and ex.stats()["extensions"] == 1 and ex.stats()["holds"] == 0
    _run(clock, ex, 2)
    assert ex.state == ExecutorState.HOLDING and ex.stats()["holds"] == 1
    # still moving when the watchdog fired: a ruckig stop from the plan's state brings it to rest within limits
    _run(clock, ex, 200)
    assert ex.at_rest
    _assert_feasible_and_unfiltered(ex)
    # a trajectory without policy_end_ns is the policy's up to its last step
    t1 = clock.now_ns()
    assert ex.set_trajectory(_moving_traj(t1, 0.6, speed=0.1, start=ex.commanded[0]))
    _run(clock, ex, 290)
    assert ex.state == ExecutorState.TRACKING and ex.stats()["extensions"] == 1


class _LateClock(FakeClock):
    """A fake clock whose sleeps sometimes overshoot by 0.3-4.7 periods (a loaded host)."""

    def __init__(self, start_ns: int, seed: int) -> None:
        super().__init__(start_ns)
        self._rng = np.random.default_rng(seed)

    def sleep_until(self, t_ns: int) -> None:
        extra = int(self._rng.uniform(0.3, 4.7) * PERIOD) if self._rng.random() < 0.15 else 0
        super().sleep_until(t_ns + extra)


def test_the_loop_skips_missed_deadlines_and_computes_each_tick_for_its_true_time():
    clock = _LateClock(1_000 * MS, seed=3)
    robot = KinematicRobot(clock=clock)
    ex = Executor(robot, clock, rate_hz=500.0, history=10_000)
    ex.set_trajectory(_moving_traj(clock.now_ns(), 2.0, speed=0.8))

    def after_tick() -> None:
        if ex.stats()["ticks"] >= 600:
            ex.request_stop()

    ex.run_loop(after_tick=after_tick)  # returns once the stop brought the arm to rest
    st = ex.stats()
    t = np.array([r.t_ns for r in ex.history])
    assert np.all(np.diff(t) >= PERIOD // 2)  # strictly increasing, never closer than half a period
    assert st["skipped_ticks"] > 50 and st["overruns"] > 20 and len(ex.overrun_events) == st["overruns"]
    late = [int(x) for x in t if (x - 1_000 * MS) % PERIOD]  # ticks computed for their true (late) time
    assert len(late) == st["overruns"]
    _assert_feasible_and_unfiltered(ex)
    assert ex.at_rest
