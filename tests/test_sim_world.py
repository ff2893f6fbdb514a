"""SimWorld / SimRobot / scene: kinematics match the URDF, the arm holds and tracks, commands are validated."""

from __future__ import annotations

import mujoco
import numpy as np
import pinocchio as pin
import pytest

from robot_stack.clock import FakeClock, MonotonicClock
from robot_stack.errors import SafetyError, ShapeError
from robot_stack.robots import panda
from robot_stack.sim import SceneConfig, SimRobot, SimWorld, build_model, scene
from robot_stack.sim.world import CUBE_X_RANGE, CUBE_Y_RANGE

MS = 1_000_000


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock(start_ns=1_000 * MS)


@pytest.fixture()
def world(clock: FakeClock) -> SimWorld:
    return SimWorld(clock)


def run_for(world: SimWorld, clock: FakeClock, seconds: float, tick_ms: int = 10) -> None:
    for _ in range(round(seconds * 1000 / tick_ms)):
        clock.advance(tick_ms * MS)
        world.sync(clock.now_ns())


def test_scene_has_urdf_names_base_at_origin_and_timestep() -> None:
    model = build_model()
    for joint in (*panda.ARM_JOINTS, *panda.FINGER_JOINTS):
        assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint) >= 0, joint
    for body in (panda.BASE_LINK, panda.TCP_FRAME, scene.CUBE_BODY):
        assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body) >= 0, body
    assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "front") >= 0
    assert model.opt.timestep == pytest.approx(0.002)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    base = model.body(panda.BASE_LINK).id
    np.testing.assert_allclose(data.xpos[base], 0.0, atol=1e-12)
    np.testing.assert_allclose(data.xmat[base].reshape(3, 3), np.eye(3), atol=1e-12)
    # table top is the plane z = 0
    table = model.geom(scene.TABLE_GEOM).id
    assert data.geom_xpos[table][2] + model.geom_size[table][2] == pytest.approx(0.0, abs=1e-12)


def test_extra_camera_by_parameter() -> None:
    side = scene.CameraSpec("side", pos=(0.5, -1.0, 0.8), target=(0.5, 0.0, 0.1))
    model = build_model(SceneConfig().with_camera(side))
    assert model.ncam == 2
    assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "side") >= 0


def test_tcp_pose_matches_pinocchio_forward_kinematics(world: SimWorld) -> None:
    """MuJoCo (scene) and pinocchio (IK) load the same URDF: the TCP must agree at random configurations."""
    pmodel = pin.buildModelFromUrdf(str(panda.urdf_path()))
    pdata = pmodel.createData()
    frame = pmodel.getFrameId(panda.TCP_FRAME)
    rng = np.random.default_rng(7)
    lim = panda.LIMITS
    for _ in range(5):
        q = rng.uniform(lim.lower, lim.upper)
        world.set_arm_q(q)
        q_pin = pin.neutral(pmodel)
        for i, name in enumerate(panda.ARM_JOINTS):
            q_pin[pmodel.joints[pmodel.getJointId(name)].idx_q] = q[i]
        pin.framesForwardKinematics(pmodel, pdata, q_pin)
        expected = pdata.oMf[frame]
        got = world.tcp_pose()
        assert (got.parent, got.child) == ("base", "tcp")
        np.testing.assert_allclose(got.translation, expected.translation, atol=1e-6)
        np.testing.assert_allclose(got.rotation, expected.rotation, atol=1e-6)


def test_arm_holds_home_under_gravity(world: SimWorld, clock: FakeClock) -> None:
    robot = SimRobot(world)
    start = robot.read_state()
    np.testing.assert_allclose(start.q, panda.HOME_Q, atol=1e-9)
    run_for(world, clock, 2.0)
    end = robot.read_state()
    drift = np.linalg.norm(end.ee_pose.translation - start.ee_pose.translation)
    assert drift < 0.002, f"TCP drifted {drift * 1000:.2f} mm at HOME_Q"
    assert end.t_ns - start.t_ns == 2_000 * MS
    assert world.stats.steps == 1000
    assert world.stats.skipped_s == 0.0


def test_joint_step_is_tracked(world: SimWorld, clock: FakeClock) -> None:
    robot = SimRobot(world)
    target = panda.HOME_Q + np.array([0.3, 0.2, -0.2, 0.3, 0.3, -0.3, 0.5])
    robot.command(target, gripper=0.0)
    run_for(world, clock, 1.5)
    state = robot.read_state()
    np.testing.assert_allclose(state.q, target, atol=0.01)
    assert np.max(np.abs(state.dq)) < 0.05
    assert state.gripper < 0.05  # closed on nothing
    robot.command(target, gripper=1.0)
    run_for(world, clock, 0.5)
    assert robot.read_state().gripper > 0.95


def test_bad_commands_are_rejected_not_clamped(world: SimWorld) -> None:
    robot = SimRobot(world)
    before = world.data.ctrl.copy()
    with pytest.raises(ShapeError):
        robot.command(np.zeros(6))
    bad = panda.HOME_Q.copy()
    bad[2] = np.nan
    with pytest.raises(SafetyError):
        robot.command(bad)
    out = panda.HOME_Q.copy()
    out[3] = 0.5  # joint 4 upper limit is -0.0698
    with pytest.raises(SafetyError, match="panda_joint4"):
        robot.command(out)
    with pytest.raises(SafetyError):
        robot.command(panda.HOME_Q, gripper=1.5)
    assert robot.rejected == 4
    np.testing.assert_array_equal(world.data.ctrl, before)


def test_sync_caps_steps_counts_skipped_time_and_never_goes_back(world: SimWorld, clock: FakeClock) -> None:
    clock.advance(10_000 * MS)
    steps = world.sync(clock.now_ns())
    assert steps == world.max_steps_per_sync == 50
    assert world.stats.skipped_s == pytest.approx(10.0 - 0.1, abs=1e-9)
    assert world.stats.skip_events == 1
    # after a skip the world is anchored to the clock again: 20 ms later -> 10 steps
    clock.advance(20 * MS)
    assert world.sync(clock.now_ns()) == 10
    assert world.sync(clock.now_ns() - 5 * MS) == 0  # an older time never steps backwards
    assert world.synced_ns == clock.now_ns()


def test_reset_is_seeded_and_cube_lands_in_workspace(world: SimWorld) -> None:
    poses = []
    for seed in range(6):
        world.reset(seed)
        p = world.cube_pose().translation
        assert CUBE_X_RANGE[0] <= p[0] <= CUBE_X_RANGE[1]
        assert CUBE_Y_RANGE[0] <= p[1] <= CUBE_Y_RANGE[1]
        assert p[2] == pytest.approx(0.025, abs=1e-9)
        np.testing.assert_allclose(world.cube_top_center(), p + [0, 0, 0.025], atol=1e-9)
        poses.append(p)
    world.reset(3)
    np.testing.assert_allclose(world.cube_pose().translation, poses[3])
    assert len({tuple(np.round(p, 6)) for p in poses}) == 6


def test_cube_rests_on_table(world: SimWorld, clock: FakeClock) -> None:
    start = world.cube_pose()
    run_for(world, clock, 1.0)
    end = world.cube_pose()
    assert end.distance_to(start)[0] < 1e-3
    assert world.finger_cube_contacts() == 0


def test_runs_on_the_monotonic_clock() -> None:
    world = SimWorld(MonotonicClock())
    robot = SimRobot(world)
    a = robot.read_state()
    b = robot.read_state()
    assert b.t_ns >= a.t_ns
    assert world.synced_ns == b.t_ns
