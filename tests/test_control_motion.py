"""Motion within the limits by construction: the plan the executor follows never asks the safety filter for
anything (FakeClock + KinematicRobot).

Every scenario of issue 13 — start from rest into a moving chunk (B), a plan picked up before its first point (C),
a splice with a large mismatch at 300 ms latency (E), an extension past a fast chunk's end (E), a stop from full
speed (D), a retreat while moving, and ticks that were skipped (A) — is checked the same way: the plan's set-points
*before* the filter have velocity, acceleration and jerk (divided differences over the real tick times) within the
robot's limits, the filter intervenes 0 times and changes no set-point, and the arm goes where the plan says.

The scenario tests only use interfaces the executor had before the change up to their first assertion (the
intervention count), so run against the old executor they fail there.
"""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.clock import FakeClock
from robot_stack.control.executor import Executor, ExecutorState
from robot_stack.control.safety import SafetyFilter
from robot_stack.control.scheduler import ChunkScheduler, SchedulerConfig
from robot_stack.robots import panda
from robot_stack.sim.kinematic import KinematicRobot
from robot_stack.types import JointTrajectory

NAMES = panda.ARM_JOINTS
MS = 1_000_000
PERIOD = 2 * MS
LIM = panda.LIMITS


def _rig(watchdog_s: float = 0.5):
    clock = FakeClock(start_ns=1_000 * MS)
    robot = KinematicRobot(clock=clock, history=100_000)
    ex = Executor(robot, clock, rate_hz=500.0, safety=SafetyFilter(LIM), watchdog_timeout_s=watchdog_s)
    if hasattr(ex, "history"):  # record the plan's set-points (the executor after the change)
        ex = Executor(robot, clock, 500.0, SafetyFilter(LIM), watchdog_timeout_s=watchdog_s, history=100_000)
    return clock, robot, ex


def _run(clock: FakeClock, ex: Executor, seconds: float) -> None:
    for _ in range(round(seconds / 0.002)):
        clock.advance(PERIOD)
        ex.tick(clock.now_ns())


def _line(t0_ns: int, start: np.ndarray, velocity: np.ndarray | float, steps: int = 8, dt: float = 0.1):
    t = np.arange(steps) * dt
    q = start + np.outer(t, np.broadcast_to(velocity, (7,)))
    return JointTrajectory(NAMES, t0_ns + np.round(t * 1e9).astype(np.int64), q)


def _check(ex: Executor, robot: KinematicRobot) -> dict[str, float]:
    """0 interventions, the plan's set-points within every limit, sent unchanged, executed exactly."""
    assert ex.safety.stats()["total"] == 0, ex.safety.stats()
    from robot_stack.control.audit import stream_ratios

    t = np.array([r.t_ns for r in ex.history])
    q_plan = np.array([r.q_plan for r in ex.history])
    q_sent = np.array([r.q_sent for r in ex.history])
    ratios = stream_ratios(t, q_plan, LIM)
    assert max(ratios.values()) <= 1.0, ratios
    np.testing.assert_array_equal(q_plan, q_sent)  # plan vs executed: the filter changed nothing
    assert ex.stats()["plan_deviation_max_mrad"] == 0.0
    executed = np.array([c[1] for c in robot.commands])[-len(q_sent) :]
    np.testing.assert_array_equal(executed, q_sent)  # the robot got exactly those set-points
    return ratios


def test_start_from_rest_into_a_chunk_already_moving_fast():
    # cause B: a chunk moving at 0.8 rad/s handed to an arm at rest (used to be a fixed 0.1 s blend: 2.4-3.6x the
    # acceleration limit)
    clock, robot, ex = _rig()
    ex.tick(clock.now_ns())
    t0 = clock.now_ns()
    traj = _line(t0, panda.HOME_Q, 0.8)
    assert ex.set_trajectory(traj)
    _run(clock, ex, 0.6)
    ratios = _check(ex, robot)
    assert ratios["acceleration"] > 0.5  # it did accelerate hard, within the limits
    # after the join the arm is exactly on the chunk (timed as the policy asked: it is within the limits)
    plan = ex.planner.time(traj).plan
    np.testing.assert_allclose(ex.commanded[0], plan.sample(clock.now_ns()).q, atol=1e-9)
    np.testing.assert_allclose(ex.commanded[1], 0.8, atol=1e-9)


def test_a_plan_picked_up_before_its_first_point_is_joined_at_or_after_it():
    # cause C: a late tick picks up a trajectory whose first point lies in the future; sampling it there used to
    # give its first point with zero velocity, and the switch blended out 0.35-1.2 rad/s in 0.1 s
    clock, robot, ex = _rig()
    ex.tick(clock.now_ns())
    assert ex.set_trajectory(_line(clock.now_ns(), panda.HOME_Q, 0.4, steps=10))
    _run(clock, ex, 0.3)
    q_now = robot.commands[-1][1]
    second = _line(clock.now_ns() + 30 * MS, q_now + 0.4 * 0.03, 0.6, steps=8)  # first point 30 ms ahead
    assert ex.set_trajectory(second)
    _run(clock, ex, 0.6)
    _check(ex, robot)
    # no sample was taken before the new chunk's first point: the join lands on it at or after it
    plan = ex.planner.time(second).plan
    np.testing.assert_allclose(ex.commanded[0], plan.sample(clock.now_ns()).q, atol=1e-9)


def test_splice_with_a_large_mismatch_at_300_ms_latency():
    # cause E: the splice window used to be capped at what remained of the executing trajectory (at 300 ms latency
    # sometimes 26 ms) and sized from the position mismatch only
    clock, robot, ex = _rig()
    ex.tick(clock.now_ns())
    sched = ChunkScheduler(ex, SchedulerConfig(mode="splice"))
    t0 = clock.now_ns()
    assert sched.submit(_line(t0, panda.HOME_Q, 0.5, steps=6)).accepted  # ends at t0 + 0.5 s
    _run(clock, ex, 0.38)
    # a chunk observed 300 ms ago that disagrees with the executing one by 0.3 rad; 120 ms of it remain
    t_obs = clock.now_ns() - 300 * MS
    late = _line(t_obs, panda.HOME_Q + 0.5 * 0.08 + 0.3, 0.5, steps=8)
    res = sched.submit(late)
    assert res.accepted and res.skipped_steps == 3
    _run(clock, ex, 0.4)  # to the new chunk's last step
    _check(ex, robot)
    assert res.mode == "splice" and ex.stats()["holds"] == 0 and ex.state == ExecutorState.TRACKING
    # the transition takes as long as the limits need (no window, no cap: here longer than what is left of the
    # chunk, so it lands on the chunk's extension) and ends exactly where the new chunk comes to rest
    target = ex.planner.extend(ex.planner.time(JointTrajectory(NAMES, late.t_ns[3:], late.positions[3:])).plan)
    np.testing.assert_allclose(res.plan.end_state.q, target.end_state.q, atol=1e-9)
    t = np.arange(res.plan.start_ns, res.plan.end_ns, MS)
    landed = np.all(np.abs(res.plan.sample_many(t)[0] - target.sample_many(t)[0]) < 1e-9, axis=1)
    assert landed[-1] and not landed[t.searchsorted(int(late.t_ns[-1]))]


def test_extension_past_the_end_of_a_fast_chunk():
    # cause E: the extension used to start from a capped velocity ("the safety filter smooths that")
    clock, robot, ex = _rig(watchdog_s=1.0)
    ex.tick(clock.now_ns())
    sched = ChunkScheduler(ex)
    assert sched.submit(_line(clock.now_ns(), panda.HOME_Q, 0.9)).accepted  # ends moving at 0.9 rad/s
    _run(clock, ex, 1.6)
    _check(ex, robot)
    assert ex.stats()["extensions"] == 1 and ex.at_rest


def test_stop_from_full_speed_starts_from_the_plan_state():
    # cause D: stops used to decelerate from the safety filter's (possibly lagging) output
    clock, robot, ex = _rig()
    ex.tick(clock.now_ns())
    v = 0.6 * LIM.velocity
    assert ex.set_trajectory(_line(clock.now_ns(), panda.HOME_Q - 0.6, v, steps=12))
    _run(clock, ex, 0.8)
    q_b, v_b, a_b = ex.commanded
    np.testing.assert_allclose(v_b, v, rtol=1e-6)  # on the chunk, at speed
    ex.stop()  # no loop thread here: the next ticks bring the arm to rest
    _run(clock, ex, 0.8)
    _check(ex, robot)
    from robot_stack.control.audit import divided_differences

    t = np.array([r.t_ns for r in ex.history])
    q = np.array([r.q_plan for r in ex.history])
    vel = divided_differences(t, q)[0]
    i_stop = 400  # between the last tick before stop() and the first after: the stop continues the plan's motion
    np.testing.assert_allclose(q[i_stop], q_b)
    assert np.all(np.abs(vel[i_stop] - v_b) <= LIM.acceleration * 0.002)
    assert np.all(vel[-20:] == 0.0) and ex.at_rest and ex.state == ExecutorState.HOLDING


def test_retreat_while_moving():
    from robot_stack.cycle.recovery import retreat_trajectory

    clock, robot, ex = _rig()
    ex.tick(clock.now_ns())
    sched = ChunkScheduler(ex)
    assert sched.submit(_line(clock.now_ns(), panda.HOME_Q, 0.5, steps=10)).accepted
    _run(clock, ex, 0.4)
    q_from = ex.commanded[0]
    retreat = retreat_trajectory(NAMES, q_from, panda.HOME_Q - 0.2, LIM, clock.now_ns() + 20 * MS, 0.7)
    assert sched.submit(retreat).accepted
    _run(clock, ex, 2.5)
    _check(ex, robot)
    np.testing.assert_allclose(ex.commanded[0], panda.HOME_Q - 0.2, atol=2e-3)
    assert ex.at_rest


@pytest.mark.parametrize("skips", [(1,), (2, 5), (1, 3, 7)])
def test_skipped_ticks_are_differenced_over_the_real_elapsed_time(skips):
    # cause A: the loop skips missed ticks and computes the next one for the true time; the filter must difference
    # over the real elapsed time (it used to take every step as one period: 429 of 430 jerk violations fell within
    # 3 ticks of a skipped tick)
    clock, robot, ex = _rig()
    ex.tick(clock.now_ns())
    assert ex.set_trajectory(_line(clock.now_ns(), panda.HOME_Q, 0.6, steps=10))
    rng = np.random.default_rng(len(skips))
    for k in range(400):
        missed = skips[k % len(skips)] if rng.random() < 0.2 else 0
        clock.advance(PERIOD * (1 + missed))
        ex.tick(clock.now_ns())
    _check(ex, robot)


def test_safety_filter_passes_irregular_samples_of_a_feasible_trajectory_unchanged():
    f = SafetyFilter(LIM)
    f.reset(panda.HOME_Q)
    t = 0.0
    rng = np.random.default_rng(0)
    w = 2 * np.pi * 0.5
    amp = 0.5 * np.min(LIM.acceleration / w**2)  # within every limit: acceleration amp w^2, jerk amp w^3
    for _ in range(2000):
        dt = 0.002 * int(rng.choice([1, 1, 1, 2, 3, 6]))
        t += dt
        q = panda.HOME_Q + amp * (1.0 - np.cos(w * t))
        np.testing.assert_array_equal(f.filter(q, dt_s=dt), q)
    assert f.stats()["total"] == 0 and f.stats()["catch_up_ticks"] == 0
    # the same samples differenced as if every step were one period look 2-6x faster: that is what the old filter
    # saw after a skipped tick
    g = SafetyFilter(LIM)
    g.reset(panda.HOME_Q)
    t = 0.0
    for k in range(400):
        t += 0.002 * (5 if k % 50 == 49 else 1)
        g.filter(panda.HOME_Q + 0.3 * (1.0 - np.cos(4.0 * t)))
    assert g.stats()["total"] > 0
