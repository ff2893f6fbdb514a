"""Waypoint sampling: C1 continuity at waypoints, and consistent motion outside the waypoints' span."""

from __future__ import annotations

import numpy as np

from robot_stack.control.trajectory import JointSpline
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


def test_outside_its_span_the_spline_continues_along_its_end_tangents():
    # a sample before the first waypoint (a late pick-up) must be consistent with the motion that follows: before
    # the fix it held the first point with zero velocity, so a switch there had to blend a velocity jump out
    traj = _traj()
    spline = JointSpline(traj)
    t0, t1 = int(traj.t_ns[0]), int(traj.t_ns[-1])
    first, last = spline.sample(t0 + 1), spline.sample(t1 - 1)
    before, after = spline.sample(t0 - 10 * MS), spline.sample(t1 + 10 * MS)
    np.testing.assert_allclose(before.dq, first.dq, atol=1e-6)
    np.testing.assert_allclose(after.dq, last.dq, atol=1e-6)
    assert np.abs(before.dq).max() > 0.01
    np.testing.assert_allclose(before.q, traj.positions[0] - first.dq * 0.01, atol=1e-6)
    np.testing.assert_allclose(after.q, traj.positions[-1] + last.dq * 0.01, atol=1e-6)
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
