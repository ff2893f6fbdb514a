"""Decoders: ee_delta_xyz chunks -> IK -> joint trajectory whose FK hits the targets; joint_position; validation."""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.decoders import available_decoders, get_decoder
from robot_stack.decoders.ee_delta import R_DOWN, EeDeltaXyzDecoder
from robot_stack.decoders.joint import JointPositionDecoder
from robot_stack.errors import ConfigError, DecodeError, IKError, ShapeError
from robot_stack.kinematics.ik import panda_ik
from robot_stack.robots import panda
from robot_stack.types import ActionChunk, Pose, RobotState

MS = 1_000_000


@pytest.fixture(scope="module")
def ik():
    return panda_ik()


def _state(ik, q: np.ndarray, t_ns: int = 5_000 * MS) -> RobotState:
    return RobotState(t_ns, q, np.zeros(7), ik.fk(q), gripper=0.7)


def _circle_chunk(t_obs_ns: int, horizon: int = 16, radius: float = 0.05) -> ActionChunk:
    k = np.arange(horizon)
    ang = 2 * np.pi * k / horizon
    deltas = np.stack([radius * np.sin(ang), radius * (1 - np.cos(ang)), -0.002 * k], axis=1)
    return ActionChunk(t_obs_ns, 0.1, deltas, "ee_delta_xyz", gripper=np.linspace(1, 0, horizon))


def test_registry_lists_and_builds_decoders(ik):
    assert {"ee_delta_xyz", "joint_position"} <= set(available_decoders())
    assert isinstance(get_decoder("ee_delta_xyz", ik=ik), EeDeltaXyzDecoder)
    assert isinstance(get_decoder("joint_position"), JointPositionDecoder)
    with pytest.raises(ConfigError, match="available"):
        get_decoder("motion_tracks_v9")


@pytest.mark.parametrize("orientation", ["keep", "down"])
def test_ee_delta_chunk_fk_matches_targets(ik, orientation):
    q0 = panda.HOME_Q + np.array([0.2, 0.1, -0.1, 0.2, 0.05, -0.1, 0.3])
    state = _state(ik, q0)
    chunk = _circle_chunk(state.t_ns)
    decoder = EeDeltaXyzDecoder(ik, orientation=orientation, latency_offset_s=0.03)
    traj = decoder.decode(chunk, state)
    assert traj.joint_names == panda.ARM_JOINTS
    np.testing.assert_array_equal(traj.t_ns, chunk.step_times_ns() + 30 * MS)
    np.testing.assert_allclose(traj.gripper, chunk.gripper)
    want_r = state.ee_pose.rotation if orientation == "keep" else R_DOWN
    for k in range(chunk.horizon):
        pose = ik.fk(traj.positions[k])
        target = state.ee_pose.translation + chunk.actions[k].astype(np.float64)
        assert np.linalg.norm(pose.translation - target) < 1e-3
        assert pose.distance_to(Pose(want_r, target))[1] < np.deg2rad(0.5)
        assert np.all(traj.positions[k] >= panda.LIMITS.lower) and np.all(traj.positions[k] <= panda.LIMITS.upper)
    # warm starts keep consecutive solutions on one branch: no joint jumps between 5 cm-apart targets
    assert np.max(np.abs(np.diff(np.vstack([q0, traj.positions]), axis=0))) < 0.3


def test_zero_chunk_keeps_the_arm_where_it_is(ik):
    state = _state(ik, panda.HOME_Q)
    chunk = ActionChunk(state.t_ns, 0.05, np.zeros((4, 3)), "ee_delta_xyz")
    traj = get_decoder("ee_delta_xyz", ik=ik).decode(chunk, state)
    np.testing.assert_allclose(traj.positions, np.tile(panda.HOME_Q, (4, 1)), atol=1e-9)
    assert traj.gripper is None


def test_unreachable_target_raises_ik_error_with_step(ik):
    state = _state(ik, panda.HOME_Q)
    chunk = ActionChunk(state.t_ns, 0.1, np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]), "ee_delta_xyz")
    with pytest.raises(IKError, match="step 1/2") as info:
        EeDeltaXyzDecoder(ik, max_iters=30).decode(chunk, state)
    assert isinstance(info.value, DecodeError)


def test_ee_delta_validation(ik):
    state = _state(ik, panda.HOME_Q)
    with pytest.raises(ShapeError, match=r"\(horizon, 3\)"):
        EeDeltaXyzDecoder(ik).decode(ActionChunk(state.t_ns, 0.1, np.zeros((4, 7)), "ee_delta_xyz"), state)
    with pytest.raises(DecodeError, match="joint_position"):
        EeDeltaXyzDecoder(ik).decode(ActionChunk(state.t_ns, 0.1, np.zeros((4, 3)), "joint_position"), state)
    bad_state = RobotState(0, np.zeros(6), np.zeros(6), state.ee_pose)
    with pytest.raises(ShapeError, match="state.q"):
        EeDeltaXyzDecoder(ik).decode(ActionChunk(0, 0.1, np.zeros((4, 3)), "ee_delta_xyz"), bad_state)
    with pytest.raises(ShapeError):  # non-finite chunks cannot even be built
        ActionChunk(0, 0.1, np.full((4, 3), np.nan), "ee_delta_xyz")
    with pytest.raises(ConfigError):
        EeDeltaXyzDecoder(ik, orientation="sideways")


def test_joint_position_decoder(ik):
    state = _state(ik, panda.HOME_Q)
    actions = panda.HOME_Q + np.outer(np.linspace(0, 0.1, 5), np.ones(7))
    chunk = ActionChunk(state.t_ns, 0.02, actions, "joint_position", gripper=np.full(5, 1.5))
    traj = JointPositionDecoder(limits=panda.LIMITS, latency_offset_s=0.01).decode(chunk, state)
    np.testing.assert_allclose(traj.positions, actions.astype(np.float32), atol=1e-6)
    np.testing.assert_array_equal(traj.t_ns, chunk.step_times_ns() + 10 * MS)
    assert np.all(traj.gripper == 1.0)  # clipped into [0, 1]
    with pytest.raises(ShapeError, match=r"\(horizon, 7\)"):
        JointPositionDecoder().decode(ActionChunk(0, 0.02, np.zeros((5, 6)), "joint_position"), state)
    out_of_range = np.tile(panda.HOME_Q, (2, 1))
    out_of_range[1, 3] = 0.5  # joint 4 upper limit is -0.0698
    with pytest.raises(ShapeError, match="panda_joint4"):
        JointPositionDecoder(limits=panda.LIMITS).decode(ActionChunk(0, 0.02, out_of_range, "joint_position"), state)


def test_decoded_trajectory_drives_the_executor_to_the_targets(ik):
    """End to end in lock-step: chunk -> decoder -> executor -> kinematic robot reaches the last target."""
    from robot_stack.clock import FakeClock
    from robot_stack.control.executor import Executor
    from robot_stack.sim.kinematic import KinematicRobot

    clock = FakeClock(start_ns=10_000 * MS)
    robot = KinematicRobot(ik=ik, clock=clock)
    ex = Executor(robot, clock, rate_hz=500.0)
    ex.tick(clock.now_ns())
    state = robot.read_state()
    chunk = ActionChunk(state.t_ns, 0.1, np.outer(np.linspace(0, 1, 6), [0.05, -0.03, -0.04]), "ee_delta_xyz")
    traj = EeDeltaXyzDecoder(ik).decode(chunk, state)
    assert ex.set_trajectory(traj)
    for _ in range(260):  # 0.52 s: past the chunk's last step (0.5 s)
        clock.advance(2 * MS)
        ex.tick(clock.now_ns())
    final = robot.read_state().ee_pose.translation
    target = state.ee_pose.translation + np.array([0.05, -0.03, -0.04])
    assert np.linalg.norm(final - target) < 3e-3  # within the few mm the stop-from-speed overshoot allows
