"""The pieces of the motion core: exact piecewise-cubic plans, ruckig transitions as plans, TOPP-RA chunk timing."""

from __future__ import annotations

import numpy as np
import pytest
import ruckig
from scipy.interpolate import CubicSpline

from robot_stack.control.online import MotionLimits, OnlineGenerator, trajectory_to_plan
from robot_stack.control.plan import JointState, MotionPlan
from robot_stack.control.timing import time_chunk
from robot_stack.errors import ConfigError, ShapeError
from robot_stack.robots import panda
from robot_stack.types import JointTrajectory

NAMES = panda.ARM_JOINTS
LIM = panda.LIMITS
T0 = 10**12
MS = 1_000_000


def _random_plan(seed: int) -> MotionPlan:
    rng = np.random.default_rng(seed)
    s = np.cumsum(np.r_[0.0, rng.uniform(0.05, 0.2, 9)])
    q = panda.HOME_Q + np.cumsum(rng.normal(0, 0.05, (10, 7)), axis=0)
    return MotionPlan.from_scipy(NAMES, T0, CubicSpline(s, q, axis=0))


@pytest.mark.parametrize("seed", range(3))
def test_peaks_and_position_range_are_exact(seed):
    plan = _random_plan(seed)
    t = np.linspace(plan.start_ns, plan.end_ns, 200_001).astype(np.int64)
    q, v, a = plan.sample_many(t)
    peaks = plan.peaks()
    # dense sampling never exceeds the exact peaks, and comes within sampling error of them
    assert np.all(np.abs(v).max(axis=0) <= peaks.velocity + 1e-12)
    assert np.all(np.abs(a).max(axis=0) <= peaks.acceleration + 1e-12)
    np.testing.assert_allclose(np.abs(v).max(axis=0), peaks.velocity, rtol=1e-6)
    np.testing.assert_allclose(np.abs(a).max(axis=0), peaks.acceleration, rtol=1e-4)
    jerk = np.diff(a, axis=0) / np.diff(t * 1e-9)[:, None]
    np.testing.assert_allclose(np.abs(jerk).max(axis=0), peaks.jerk, rtol=1e-6)
    lo, hi = plan.position_range()
    np.testing.assert_allclose(q.min(axis=0), lo, atol=1e-9)
    np.testing.assert_allclose(q.max(axis=0), hi, atol=1e-9)
    assert plan.max_jumps() == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)


def test_until_after_then_reproduce_the_plan():
    plan = _random_plan(4)
    cut = plan.start_ns + 437 * MS
    head, tail = plan.until(cut), plan.after(cut)
    assert head.end_ns == cut == tail.start_ns
    joined = head.then(tail)
    t = np.linspace(plan.start_ns, plan.end_ns, 5001).astype(np.int64)
    for a, b in zip(joined.sample_many(t), plan.sample_many(t), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    with pytest.raises(ShapeError, match="starts"):
        tail.then(head)
    slow = plan.time_scaled(2.0)
    assert slow.duration_s == pytest.approx(2 * plan.duration_s)
    ratios = np.array(slow.peaks().ratios(LIM.velocity, LIM.acceleration, LIM.jerk)) / np.array(
        plan.peaks().ratios(LIM.velocity, LIM.acceleration, LIM.jerk)
    )
    np.testing.assert_allclose(ratios, [0.5, 0.25, 0.125], rtol=1e-9)


def test_plans_cross_processes_as_bytes_and_malformed_bytes_are_refused():
    plan = _random_plan(5).with_gripper(np.array([T0, T0 + 500 * MS]), np.array([1.0, 0.0]))
    plan = plan.with_policy_end(T0 + 400 * MS)
    back = MotionPlan.from_bytes(plan.to_bytes())
    np.testing.assert_array_equal(back.coeffs, plan.coeffs)
    np.testing.assert_array_equal(back.breaks, plan.breaks)
    assert back.policy_end_ns == plan.policy_end_ns and back.gripper_at(T0 + 250 * MS) == pytest.approx(0.5)
    data = plan.to_bytes()
    for bad in (b"junk", data[:-8], data + b"\0" * 8, b"RSPLAN1\0" + data[8:12] + b"{not json"):
        with pytest.raises(ShapeError):
            MotionPlan.from_bytes(bad)
    with pytest.raises(ShapeError):
        MotionPlan(NAMES, T0, np.array([0.0, 0.1, 0.1]), np.zeros((2, 4, 7)))  # breaks not increasing


@pytest.mark.parametrize("interface", ["position", "velocity"])
def test_ruckig_trajectories_convert_exactly_into_plans(interface):
    rng = np.random.default_rng(7)
    otg, inp, traj = ruckig.Ruckig(7), ruckig.InputParameter(7), ruckig.Trajectory(7)
    for _ in range(20):
        inp.current_position = rng.normal(0, 1, 7).tolist()
        inp.current_velocity = rng.normal(0, 2.5, 7).tolist()  # sometimes beyond the limit: a brake phase first
        inp.current_acceleration = rng.normal(0, 8, 7).tolist()
        inp.target_position = rng.normal(0, 1, 7).tolist()
        inp.target_velocity = rng.uniform(-1, 1, 7).tolist()
        inp.target_acceleration = rng.uniform(-2, 2, 7).tolist()
        inp.max_velocity, inp.max_acceleration, inp.max_jerk = (
            LIM.velocity.tolist(),
            LIM.acceleration.tolist(),
            LIM.jerk.tolist(),
        )
        inp.control_interface = (
            ruckig.ControlInterface.Position if interface == "position" else ruckig.ControlInterface.Velocity
        )
        assert otg.calculate(inp, traj) in (ruckig.Result.Working, ruckig.Result.Finished)
        plan = trajectory_to_plan(traj, NAMES, T0)
        for ts in np.linspace(0.0, traj.duration, 97):
            p, v, a = traj.at_time(float(ts))
            got = plan.sample(T0 + round(ts * 1e9))
            np.testing.assert_allclose(got.q, p, atol=1e-8)
            np.testing.assert_allclose(got.v, v, atol=1e-5)
            np.testing.assert_allclose(got.a, a, atol=2e-2)  # a moves at up to 1e4 rad/s^3: 1 ns of rounding


def test_join_lands_on_the_moving_target_within_the_limits_and_stop_ends_at_rest():
    lim = MotionLimits.of(LIM, 0.9, 0.9, 0.9)
    gen = OnlineGenerator(NAMES, lim)
    s = np.arange(10) * 0.1
    target = MotionPlan.from_scipy(NAMES, T0 + 50 * MS, CubicSpline(s, panda.HOME_Q + np.outer(s, np.full(7, 0.6))))
    target = target.then(gen.stop(target.end_state, target.end_ns))
    start = JointState.at_rest(panda.HOME_Q - 0.2)
    plan = gen.join(start, T0, target)
    assert plan.start_ns == T0 and plan.end_ns == target.end_ns and plan.ends_at_rest()
    assert lim.admits(plan)
    s0 = plan.sample(T0)
    np.testing.assert_allclose(np.r_[s0.q, s0.v, s0.a], np.r_[start.q, start.v, start.a], atol=1e-9)
    # from some time on the plan *is* the target; before it, the transition
    t = np.arange(T0, plan.end_ns, MS)
    same = np.all(np.abs(plan.sample_many(t)[0] - target.sample_many(t)[0]) < 1e-9, axis=1)
    landed = int(np.flatnonzero(~same)[-1]) + 1
    assert landed > 0 and (t[landed] - T0) / 1e9 < 0.9  # landed well before the target's last step
    stop = gen.stop(JointState(panda.HOME_Q, np.full(7, 1.5), np.zeros(7)), T0)
    assert stop.ends_at_rest() and lim.admits(stop)
    with pytest.raises(ConfigError):
        MotionLimits.of(LIM, 1.5)


def _chunk(q: np.ndarray, dt: float = 0.1) -> JointTrajectory:
    return JointTrajectory(NAMES, T0 + np.round(np.arange(len(q)) * dt * 1e9).astype(np.int64), q)


def test_a_feasible_chunk_keeps_the_policys_timing():
    q = panda.HOME_Q + np.outer(np.arange(8) * 0.03, np.ones(7))
    timing = time_chunk(_chunk(q), MotionLimits.of(LIM, 0.9, 0.8, 0.8))
    assert timing.method == "nominal" and timing.slowdown == 1.0
    for k in range(8):
        np.testing.assert_allclose(timing.plan.sample(T0 + k * 100 * MS).q, q[k], atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_an_infeasible_chunk_is_retimed_within_the_limits_never_faster_than_asked(seed):
    rng = np.random.default_rng(seed)
    q = panda.HOME_Q + np.cumsum(rng.normal(0, 0.12, (8, 7)), axis=0)  # ~1 rad/s with hard turns
    lim = MotionLimits.of(LIM, 0.9, 0.8, 0.8)
    timing = time_chunk(_chunk(q), lim)
    assert timing.method in ("toppra", "stretch") and timing.slowdown > 1.0
    plan = timing.plan
    assert lim.admits(plan)
    # the same path (it ends on the last step), never traversed faster than the policy asked
    np.testing.assert_allclose(plan.sample(plan.policy_end_ns).q, q[-1], atol=1e-9)
    assert plan.policy_end_ns >= T0 + 700 * MS
    # a chunk with a gripper track carries the re-timed step times: monotone and no earlier than asked
    g = JointTrajectory(NAMES, _chunk(q).t_ns, q, np.linspace(1.0, 0.0, 8))
    gp = time_chunk(g, lim).plan
    assert np.all(gp.gripper_t_ns >= g.t_ns) and np.all(np.diff(gp.gripper_t_ns) > 0)
    for t_k, q_k in zip(gp.gripper_t_ns, q, strict=True):
        np.testing.assert_allclose(gp.sample(int(t_k)).q, q_k, atol=2e-3)


def test_a_path_overshooting_the_joint_range_between_steps_is_interpolated_without_overshoot():
    wild = np.tile(panda.HOME_Q, (8, 1))
    wild[:, 3] = LIM.lower[3] + 0.04 + 0.3 * (np.arange(8) % 2)  # joint 4 zig-zags just above its lower limit
    bounds = (LIM.lower + 0.025, LIM.upper - 0.025)
    lim = MotionLimits.of(LIM, 0.9, 0.8, 0.8)
    spline_lo, _ = MotionPlan.from_scipy(NAMES, T0, CubicSpline(np.arange(8) * 0.1, wild, axis=0)).position_range()
    assert spline_lo[3] < bounds[0][3]  # the C2 spline through the steps leaves the joint range
    plan = time_chunk(_chunk(wild), lim, bounds=bounds).plan
    lo, hi = plan.position_range()
    assert np.all(lo >= bounds[0] - 1e-3) and np.all(hi <= bounds[1] + 1e-3)
    assert lim.admits(plan)
    np.testing.assert_allclose(plan.sample(plan.policy_end_ns).q, wild[-1], atol=1e-9)


def test_a_state_at_rest_up_to_rounding_needs_no_transition():
    # the end of a plan comes to rest only up to rounding (v ~ 1e-16 rad/s): a stop or an extension from there used
    # to produce a ruckig trajectory of a few nanoseconds whose pieces were all too short, and raise
    from robot_stack.control.motion import MotionPlanner

    planner = MotionPlanner(NAMES, LIM)
    q = panda.HOME_Q + np.outer(np.arange(6) * 0.03, np.ones(7))
    extended = planner.extend(planner.time(_chunk(q)).plan)  # a chunk and its come-to-rest
    residue = extended.end_state
    assert np.any(residue.v != 0.0) or np.any(residue.a != 0.0)  # at rest only up to rounding
    gen = planner.generator
    for plan in (gen.stop(residue, extended.end_ns), planner.extend(extended)):
        assert plan.ends_at_rest()
        np.testing.assert_allclose(plan.end_state.q, residue.q, atol=1e-12)
    joined = gen.join(residue, extended.end_ns, MotionPlan.hold(NAMES, residue.q, extended.end_ns))
    np.testing.assert_allclose(joined.sample(extended.end_ns).q, residue.q, atol=1e-12)
