"""Executor driven deterministically with FakeClock + KinematicRobot: tracking, watchdog hold, resume, rejects."""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.clock import FakeClock
from robot_stack.control.executor import Executor, ExecutorState
from robot_stack.control.safety import SafetyFilter
from robot_stack.control.trajectory import JointSpline
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
    ex = Executor(robot, clock, rate_hz=500.0, watchdog_timeout_s=0.3, blend_s=0.05)
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
    spline = JointSpline(traj)
    times = [t0 + (k + 1) * PERIOD for k in range(450)]
    expected = np.array([spline.sample(tt).q for tt in times])
    # the spline's first tangent is the first secant (not zero): the 50 ms blend from rest absorbs that (helped by
    # the safety filter's acceleration limit on joint 2); soon after, the commands are the trajectory itself
    np.testing.assert_allclose(cmds[200:], expected[200:], atol=1e-9)
    np.testing.assert_allclose(cmds[:200], expected[:200], atol=3e-3)
    np.testing.assert_allclose(robot.read_state().q, cmds[-1])
    st = ex.safety.stats()
    assert st["position"] == 0 and st["calls"] == 455


def test_watchdog_decelerates_within_limits_then_holds_and_resumes(rig):
    clock, robot, ex = rig
    _run(clock, ex, 1)
    t0 = clock.now_ns()
    assert ex.set_trajectory(_moving_traj(t0, 0.5, speed=1.0))
    _run(clock, ex, 250)  # 0.5 s: reaches the end of the trajectory at full speed
    q_prev, v_prev, _ = ex.commanded
    assert np.all(np.abs(v_prev) > 0.9)  # moving at ~1 rad/s when the trajectory runs out
    end_ns = t0 + 500 * MS
    robot.commands.clear()
    cmds = _run(clock, ex, 400)  # 0.8 s with no trajectory
    q = np.vstack([q_prev - v_prev * 0.002, q_prev, cmds])
    v = np.diff(q, axis=0) / 0.002
    a = np.diff(v, axis=0) / 0.002
    speed = np.abs(v[1:])
    # the commanded velocity decreases monotonically to zero, within the acceleration limits
    assert np.all(np.diff(speed, axis=0) <= 1e-9)
    assert np.all(np.abs(a) <= LIM.acceleration * (1 + 1e-6))
    assert np.all(speed[-50:] == 0.0)
    # the watchdog fired once the trajectory had not covered `now` for 0.3 s
    assert ex.state == ExecutorState.HOLDING and ex.stats()["holds"] == 1
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
    # no jump at the resume: steps stay within velocity limits
    steps = np.abs(np.diff(np.vstack([hold_q, more]), axis=0)) / 0.002
    assert np.all(steps <= LIM.velocity + 1e-9)


def test_watchdog_state_sequence_timing(rig):
    clock, _, ex = rig
    _run(clock, ex, 1)
    t0 = clock.now_ns()
    ex.set_trajectory(_moving_traj(t0, 0.2, speed=0.2))
    _run(clock, ex, 100)  # exactly reaches t0 + 0.2 s
    assert ex.state == ExecutorState.TRACKING
    _run(clock, ex, 1)
    assert ex.state == ExecutorState.STOPPING
    _run(clock, ex, 148)  # 0.298 s after the last covered tick
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
    assert ex.stats()["trajectories_rejected"] == {"stale": 1, "joints": 1, "type": 1}
    assert any("stale" in r.getMessage() for r in caplog.records)
    # a trajectory that expires between hand-over and pick-up is rejected at the tick
    assert ex.set_trajectory(_moving_traj(now - 290 * MS, 0.3))
    clock.advance(50 * MS)
    ex.tick(clock.now_ns())
    assert ex.stats()["trajectories_rejected"]["stale"] == 2
    assert ex.state == ExecutorState.IDLE


def test_blend_into_new_trajectory_has_no_jump(rig):
    clock, _, ex = rig
    _run(clock, ex, 1)
    t0 = clock.now_ns()
    ex.set_trajectory(_moving_traj(t0, 1.0, speed=0.5))
    a = _run(clock, ex, 100)
    # a new trajectory that disagrees by 3 cm-ish in joint space and moves the other way
    ex.set_trajectory(_moving_traj(clock.now_ns(), 1.0, speed=-0.5, start=a[-1] + 0.03))
    b = _run(clock, ex, 100)
    q = np.vstack([a, b])
    v = np.diff(q, axis=0) / 0.002
    acc = np.diff(v, axis=0) / 0.002
    assert np.all(np.abs(v) <= LIM.velocity * (1 + 1e-9))
    assert np.all(np.abs(acc) <= LIM.acceleration * (1 + 1e-6))
    # the step across the switch is about one period at the old speed, not a 3 cm jump
    assert np.all(np.abs(q[100] - q[99]) < 0.5 * 0.002 * 1.5)
    assert ex.stats()["trajectories_accepted"] == 2


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
    _, v, _ = ex.commanded
    assert np.all(v == 0.0)  # stop() decelerated to a hold before the thread ended


def test_extension_beyond_the_policy_end_is_followed_but_the_watchdog_counts_from_the_policy_end(rig):
    clock, _, ex = rig  # watchdog 0.3 s
    _run(clock, ex, 1)
    t0 = clock.now_ns()
    traj = _moving_traj(t0, 1.0, speed=0.1)  # covers 1 s, but the policy's own steps end after 0.2 s
    assert ex.set_trajectory(traj, policy_end_ns=t0 + 200 * MS)
    _run(clock, ex, 100 + 149)  # 0.298 s after the policy end: still following the extension
    assert ex.state == ExecutorState.TRACKING and ex.stats()["extensions"] == 1 and ex.stats()["holds"] == 0
    _run(clock, ex, 2)
    assert ex.state == ExecutorState.HOLDING and ex.stats()["holds"] == 1
    # a trajectory without policy_end_ns is the policy's all the way (the old behaviour)
    t1 = clock.now_ns()
    assert ex.set_trajectory(_moving_traj(t1, 0.6, speed=0.1, start=ex.commanded[0]))
    _run(clock, ex, 290)
    assert ex.state == ExecutorState.TRACKING and ex.stats()["extensions"] == 1
