"""Trajectory sampling: C1 continuity at waypoints, endpoint holds, and jump-free blending into a new trajectory."""

from __future__ import annotations

import numpy as np

from robot_stack.control.trajectory import JointSpline, TrajectoryFollower, quintic_blend
from robot_stack.robots import panda
from robot_stack.types import JointTrajectory

NAMES = panda.ARM_JOINTS
MS = 1_000_000


def _traj(t0_ns: int = 0, n: int = 8, dt_ms: float = 100.0, seed: int = 0) -> JointTrajectory:
    rng = np.random.default_rng(seed)
    t = t0_ns + np.round(np.cumsum(np.r_[0, rng.uniform(0.5, 1.5, n - 1)]) * dt_ms * MS).astype(np.int64)
    pos = panda.HOME_Q + np.cumsum(rng.normal(0, 0.05, (n, 7)), axis=0)
    return JointTrajectory(NAMES, t, pos, gripper=np.linspace(1.0, 0.0, n))


def test_spline_passes_through_waypoints():
    traj = _traj()
    spline = JointSpline(traj)
    for t, p in zip(traj.t_ns, traj.positions, strict=True):
        np.testing.assert_allclose(spline.sample(int(t)).q, p, atol=1e-12)


def test_position_and_velocity_continuous_at_interior_waypoints():
    traj = _traj(seed=3)
    spline = JointSpline(traj)
    eps = 100  # 0.1 µs
    for t in traj.t_ns[1:-1]:
        left, right = spline.sample(int(t) - eps), spline.sample(int(t) + eps)
        np.testing.assert_allclose(left.q, right.q, atol=1e-5)
        np.testing.assert_allclose(left.dq, right.dq, atol=1e-4)
        # the analytic velocity is the derivative of the position
        fd = (right.q - left.q) / (2 * eps * 1e-9)
        np.testing.assert_allclose(fd, spline.sample(int(t)).dq, atol=1e-3)


def test_velocity_is_derivative_of_position_inside_segments():
    traj = _traj(seed=4)
    spline = JointSpline(traj)
    h = 10_000
    for t in np.linspace(traj.t_ns[0] + h, traj.t_ns[-1] - h, 37).astype(np.int64):
        fd = (spline.sample(int(t) + h).q - spline.sample(int(t) - h).q) / (2 * h * 1e-9)
        np.testing.assert_allclose(fd, spline.sample(int(t)).dq, atol=1e-4)


def test_holds_first_and_last_point_outside_range():
    traj = _traj()
    spline = JointSpline(traj)
    before, after = spline.sample(int(traj.t_ns[0]) - 10 * MS), spline.sample(int(traj.t_ns[-1]) + 10 * MS)
    np.testing.assert_allclose(before.q, traj.positions[0])
    np.testing.assert_allclose(after.q, traj.positions[-1])
    assert not before.dq.any() and not after.dq.any()
    assert before.gripper == 1.0 and after.gripper == 0.0


def test_zero_end_velocity_option_is_continuous_into_the_hold():
    traj = _traj()
    spline = JointSpline(traj, zero_end_velocity=True)
    np.testing.assert_allclose(spline.sample(int(traj.t_ns[-1]) - 1000).dq, 0.0, atol=1e-3)


def test_linear_waypoints_give_constant_velocity():
    t = np.arange(5) * 100 * MS
    pos = panda.HOME_Q + np.outer(np.arange(5) * 0.1, np.ones(7))  # 1 rad/s on every joint
    spline = JointSpline(JointTrajectory(NAMES, t, pos))
    for tt in np.linspace(1, 399, 17) * MS:
        np.testing.assert_allclose(spline.sample(int(tt)).dq, 1.0, atol=1e-9)


def test_quintic_blend_boundary_conditions():
    e0, de0, dde0 = np.array([0.1, -0.2]), np.array([1.0, 0.5]), np.array([3.0, -2.0])
    e, de, dde = quintic_blend(e0, de0, dde0, 0.1, 0.0)
    np.testing.assert_allclose((e, de, dde), (e0, de0, dde0), atol=1e-12)
    e, de, dde = quintic_blend(e0, de0, dde0, 0.1, 0.1 - 1e-9)
    np.testing.assert_allclose(np.r_[e, de], 0.0, atol=1e-5)


def test_blend_switch_has_no_position_or_velocity_jump():
    old = _traj(seed=1)
    new = _traj(t0_ns=int(old.t_ns[2]), seed=2)  # disagrees with the old one by centimetres
    follower = TrajectoryFollower(blend_s=0.1)
    follower.switch(old, int(old.t_ns[0]))
    t_switch = int(old.t_ns[3]) + 7 * MS
    period = 2 * MS
    before = follower.sample(t_switch - period)
    at_old = follower.sample(t_switch)
    follower.switch(new, t_switch, at_old.q, at_old.dq, at_old.ddq)
    at_new = follower.sample(t_switch)
    np.testing.assert_allclose(at_new.q, at_old.q, atol=1e-12)
    np.testing.assert_allclose(at_new.dq, at_old.dq, atol=1e-9)
    # consecutive commanded positions across the switch change by about velocity * period, not by a jump
    after = follower.sample(t_switch + period)
    step_before = np.abs(at_old.q - before.q)
    step_after = np.abs(after.q - at_new.q)
    assert np.all(step_after <= np.abs(at_new.dq) * period * 1.5 + 1e-3 * period * 1000 * 0.01)
    assert np.all(step_before <= np.abs(at_old.dq) * period * 1.5 + 1e-4)
    # the blend ends on the new trajectory exactly
    end = t_switch + 100 * MS + 1
    np.testing.assert_allclose(follower.sample(end).q, JointSpline(new).sample(end).q)
    assert not follower.blending(end)
