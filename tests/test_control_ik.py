"""PinocchioIK: FK/Jacobian consistency, IK convergence, limits and singular targets."""

from __future__ import annotations

import numpy as np
import pinocchio as pin
import pytest

from robot_stack.errors import IKError, ShapeError
from robot_stack.kinematics.ik import IKConfig, panda_ik
from robot_stack.robots import panda
from robot_stack.types import Pose

LIM = panda.LIMITS


@pytest.fixture(scope="module")
def ik():
    return panda_ik()


def _random_q(rng: np.random.Generator, shrink: float = 0.05) -> np.ndarray:
    span = LIM.upper - LIM.lower
    return rng.uniform(LIM.lower + shrink * span, LIM.upper - shrink * span)


def test_fk_home_is_pointing_down_in_front_of_base(ik):
    pose = ik.fk(panda.HOME_Q)
    assert (pose.parent, pose.child) == ("base", "tcp")
    np.testing.assert_allclose(pose.rotation, np.diag([1.0, -1.0, -1.0]), atol=1e-6)
    assert 0.25 < pose.translation[0] < 0.35 and abs(pose.translation[1]) < 1e-6 and 0.4 < pose.translation[2] < 0.55
    np.testing.assert_allclose(ik.fk_xyz(panda.HOME_Q), pose.translation)


def test_jacobian_matches_finite_differences_of_fk(ik):
    rng = np.random.default_rng(0)
    eps = 1e-6
    for _ in range(5):
        q = _random_q(rng)
        jac = ik.jacobian(q)
        base = ik.fk(q)
        fd = np.empty((6, 7))
        for j in range(7):
            dq = np.zeros(7)
            dq[j] = eps
            plus = ik.fk(q + dq)
            fd[:3, j] = (plus.translation - base.translation) / eps
            fd[3:, j] = pin.log3(plus.rotation @ base.rotation.T) / eps  # world-frame angular velocity
        np.testing.assert_allclose(jac, fd, atol=1e-5)


def test_ik_reaches_random_reachable_targets_from_nearby_and_from_home(ik):
    rng = np.random.default_rng(1)
    solver = panda_ik(IKConfig(restarts=8))
    for i in range(30):
        q_true = _random_q(rng)
        target = ik.fk(q_true)
        q_init = q_true + rng.normal(0.0, 0.15, 7) if i % 2 else panda.HOME_Q
        q = solver.solve(target, q_init)
        dist, angle = ik.fk(q).distance_to(target)
        assert dist < 1e-3 and np.rad2deg(angle) < 0.5, (i, dist, angle)
        assert np.all(q >= LIM.lower - 1e-12) and np.all(q <= LIM.upper + 1e-12)


def test_ik_respects_joint_limits_for_unreachable_targets(ik):
    far = Pose(np.diag([1.0, -1.0, -1.0]), np.array([1.5, 0.0, 0.3]))  # ~1.5 m: beyond the Panda's reach
    with pytest.raises(IKError, match="residual"):
        ik.solve(far, panda.HOME_Q, max_iters=60)
    res = ik.solve_with_info(far, panda.HOME_Q, max_iters=60)
    assert not res.converged and np.all(np.isfinite(res.q))
    assert np.all(res.q >= LIM.lower) and np.all(res.q <= LIM.upper)
    assert res.position_error_m > 0.3


def test_ik_near_singular_configurations_stay_finite_and_bounded(ik):
    # arm stretched straight up with the elbow at its limit: a boundary singularity and a local minimum
    q_stretched = np.array([0.0, 0.0, 0.0, -0.0698, 0.0, 0.5, 0.0])
    # wrist singularity: joint 6 ~ 0 aligns joints 5 and 7
    q_wrist = np.array([0.0, 0.3, 0.0, -1.5, 0.0, 0.0, 0.0])
    offset = np.array([0.02, 0.01, -0.01])
    for qs, must_converge in ((q_stretched, False), (q_wrist, True)):
        start = ik.fk(qs)
        target = Pose(start.rotation, start.translation + offset)
        q = qs.copy()
        for _ in range(200):
            q_next = ik.step(target, q)
            assert np.all(np.isfinite(q_next))
            assert np.all(q_next >= LIM.lower) and np.all(q_next <= LIM.upper)
            assert np.max(np.abs(q_next - q)) <= ik.config.max_step_rad + 1e-12  # damped: no step blows up
            q = q_next
        dist = ik.fk(q).distance_to(target)[0]
        assert dist <= np.linalg.norm(offset) + 1e-9  # never moves away from the target
        if must_converge:
            assert dist < 1e-4


def test_streaming_step_converges_and_caps_the_step(ik):
    target = ik.fk(panda.HOME_Q + 0.2)
    q = panda.HOME_Q.copy()
    for _ in range(100):
        q_next = ik.step(target, q, max_step_rad=0.01)
        assert np.max(np.abs(q_next - q)) <= 0.01 + 1e-12
        q = q_next
    dist, angle = ik.fk(q).distance_to(target)
    assert dist < 1e-3 and angle < np.deg2rad(0.5)


def test_position_only_ik_ignores_orientation():
    solver = panda_ik(IKConfig(rotation_weight=0.0))
    target = Pose(np.eye(3), solver.fk_xyz(panda.HOME_Q) + np.array([0.05, 0.05, -0.05]))
    q = solver.solve(target, panda.HOME_Q)
    assert np.linalg.norm(solver.fk_xyz(q) - target.translation) < 1e-3


def test_ik_rejects_bad_input(ik):
    with pytest.raises(ShapeError):
        ik.fk(np.zeros(6))
    with pytest.raises(ShapeError):
        ik.solve(ik.fk(panda.HOME_Q), np.full(7, np.nan))


def test_fk_equals_the_simulators_tcp_pose(ik):
    """pinocchio and MuJoCo load the same URDF: FK must equal the sim's TCP pose (base frame == world frame)."""
    sim_world = pytest.importorskip("robot_stack.sim.world")
    sim_robot = pytest.importorskip("robot_stack.sim.robot")
    world = sim_world.SimWorld()
    robot = sim_robot.SimRobot(world)
    rng = np.random.default_rng(3)
    for _ in range(3):
        q = _random_q(rng, shrink=0.1)
        world.set_arm_q(q, gripper=1.0)
        state = robot.read_state()
        dist, angle = ik.fk(state.q).distance_to(state.ee_pose)
        assert dist < 1e-6 and angle < 1e-5
