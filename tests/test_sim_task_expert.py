"""ReachTouchTask predicate and ScriptedExpert geometry, plus one closed-loop episode in the simulator."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_stack.clock import FakeClock
from robot_stack.errors import ShapeError
from robot_stack.robots import panda
from robot_stack.sim import ExpertConfig, ReachTouchTask, ScriptedExpert, SimRobot, SimWorld, expert_actions
from robot_stack.sim import scene as sim_scene

MS = 1_000_000
CFG = ExpertConfig()

tcp_points = st.tuples(
    st.floats(0.2, 0.7), st.floats(-0.3, 0.3), st.floats(0.05, 0.6)
)  # TCP anywhere over the table (metres)
cube_tops = st.tuples(st.floats(0.4, 0.6), st.floats(-0.15, 0.15), st.just(0.05))


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock(start_ns=1_000 * MS)


@pytest.fixture()
def task(clock: FakeClock) -> ReachTouchTask:
    t = ReachTouchTask(SimWorld(clock))
    t.reset(seed=1)
    return t


def test_not_successful_at_home(task: ReachTouchTask) -> None:
    assert not task.is_success()
    assert task.tcp_distance_m() > 0.2
    assert task.instruction == "reach and touch the red cube"


def test_successful_when_cube_is_placed_under_the_tcp(task: ReachTouchTask) -> None:
    world = task.world
    tcp = world.tcp_pose().translation
    half = world.cube_half_size_m
    world.set_cube_pose(tcp - np.array([0.0, 0.0, half + 0.03]))  # 30 mm: not yet
    assert not task.is_success()
    world.set_cube_pose(tcp - np.array([0.0, 0.0, half + 0.015]))  # top face 15 mm below the TCP
    assert task.is_success()
    assert task.time_to_success_s is not None
    np.testing.assert_allclose(task.cube_top_center(), tcp - [0, 0, 0.015], atol=1e-9)
    world.set_cube_pose(tcp - np.array([0.0, 0.0, half + 0.03]))  # moved away again: the touch already happened
    assert task.is_success()
    task.reset(seed=1)  # a new episode starts untouched
    assert not task.is_success() and task.time_to_success_s is None


def test_successful_on_finger_contact(task: ReachTouchTask) -> None:
    world = task.world
    finger = world.model.body(sim_scene.FINGER_BODIES[0]).id
    with world.lock:
        geoms = np.flatnonzero(world.model.geom_bodyid == finger)
        tip = min(geoms, key=lambda g: world.data.geom_xpos[g][2])  # the rubber fingertip pad
        tip_xyz = world.data.geom_xpos[tip].copy()
        tcp = world.tcp_pose().translation
    outward = (tip_xyz[:2] - tcp[:2]) / np.linalg.norm(tip_xyz[:2] - tcp[:2])
    centre_xy = tip_xyz[:2] + 0.01 * outward  # cube under the fingertip, pushed away from the TCP
    # cube top 1 mm above the fingertip pad's centre: overlapping the pad
    world.set_cube_pose(np.array([*centre_xy, tip_xyz[2] + 0.001 - world.cube_half_size_m]))
    assert world.finger_cube_contacts() > 0
    assert task.tcp_distance_m() > task.touch_radius_m
    assert task.is_success()


def test_timeout(task: ReachTouchTask, clock: FakeClock) -> None:
    assert not task.is_timeout()
    clock.advance(8_000 * MS)
    assert task.is_timeout() and task.is_done()


@settings(max_examples=60, deadline=None)
@given(tcp=tcp_points, top=cube_tops)
def test_expert_chunk_respects_speed_limit_and_starts_at_the_observation(tcp: tuple, top: tuple) -> None:
    actions = expert_actions(np.array(tcp), np.array(top))
    assert actions.shape == (CFG.horizon, 3) and actions.dtype == np.float32
    np.testing.assert_array_equal(actions[0], 0.0)  # step 0 is "now"
    steps = np.linalg.norm(np.diff(actions, axis=0), axis=1)
    assert np.all(steps <= CFG.max_speed_mps * CFG.dt_s + 1e-6)


def _funnel_height(p: np.ndarray, goal: np.ndarray) -> float:
    return min(CFG.hover_m, CFG.funnel_gain * float(np.linalg.norm(p[:2] - goal[:2])))


@settings(max_examples=40, deadline=None)
@given(tcp=tcp_points, top=cube_tops)
def test_expert_closed_loop_reaches_the_cube_top_without_entering_the_funnel(tcp: tuple, top: tuple) -> None:
    """Follow each chunk for one step (a perfect tracker): the TCP ends on the cube top; once above the funnel
    surface it never goes below it (no side approach into the cube)."""
    p = np.array(tcp)
    goal = np.array(top)
    above = False
    for _ in range(300):
        p = p + expert_actions(p, goal)[1].astype(np.float64)
        if p[2] - goal[2] >= _funnel_height(p, goal) - 1e-6:
            above = True
        elif above:
            pytest.fail(f"went below the approach funnel at {p} (goal {goal})")
        if np.linalg.norm(p - goal) < 1e-9:
            break
    np.testing.assert_allclose(p, goal, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(tcp=tcp_points, top=cube_tops)
def test_expert_is_continuous_in_the_tcp_position(tcp: tuple, top: tuple) -> None:
    """A 1 mm error in the observed TCP changes the commanded targets by millimetres, never by a mode switch."""
    p = np.array(tcp)
    goal = np.array(top)
    base = expert_actions(p, goal) + p.astype(np.float32)
    for offset in np.eye(3) * 1e-3:
        moved = expert_actions(p + offset, goal) + (p + offset).astype(np.float32)
        assert np.abs(moved - base).max() < 5e-3


def test_expert_approaches_from_above_when_far() -> None:
    tcp = np.array([0.3, 0.0, 0.45])
    top = np.array([0.5, 0.1, 0.05])
    p = tcp.copy()
    trace = [p.copy()]
    for _ in range(100):
        p = p + expert_actions(p, top)[1]
        trace.append(p.copy())
    trace = np.array(trace)
    horizontal = np.linalg.norm(trace[:, :2] - top[:2], axis=1)
    # never lower above the table than the funnel allows: full hover height while far away
    assert np.all(trace[:, 2] - top[2] >= np.minimum(CFG.hover_m, CFG.funnel_gain * horizontal) - 1e-6)
    np.testing.assert_allclose(trace[-1], top, atol=1e-6)


def test_scripted_expert_chunk_fields() -> None:
    chunk = ScriptedExpert().act(np.array([0.3, 0.0, 0.45]), np.array([0.5, 0.0, 0.05]), t_obs_ns=123)
    assert chunk.action_space == "ee_delta_xyz"
    assert chunk.horizon == 8 and chunk.dt_s == 0.1 and chunk.t_obs_ns == 123
    np.testing.assert_array_equal(chunk.gripper, 1.0)
    with pytest.raises(ShapeError):
        expert_actions(np.array([0.3, np.nan, 0.4]), np.array([0.5, 0.0, 0.05]))


def _diff_ik_step(world: SimWorld, target_xyz: np.ndarray, R_target: np.ndarray) -> np.ndarray:
    """One damped-least-squares IK step on MuJoCo's site Jacobian (test-only helper; the stack's IK lives in
    robot_stack.control)."""
    m, d = world.model, world.data
    site = m.site(sim_scene.TCP_SITE).id
    jacp = np.zeros((3, m.nv))
    jacr = np.zeros((3, m.nv))
    with world.lock:
        mujoco.mj_jacSite(m, d, jacp, jacr, site)
        pos = d.site_xpos[site].copy()
        rot = d.site_xmat[site].reshape(3, 3).copy()
    cols = [m.jnt_dofadr[m.joint(j).id] for j in panda.ARM_JOINTS]
    J = np.vstack([jacp[:, cols], jacr[:, cols]])
    r_err = R_target @ rot.T
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, r_err.reshape(-1))
    rotvec = np.zeros(3)
    mujoco.mju_quat2Vel(rotvec, quat, 1.0)
    err = np.concatenate([target_xyz - pos, rotvec])
    return J.T @ np.linalg.solve(J @ J.T + 1e-4 * np.eye(6), err)


@pytest.mark.parametrize("seed", [0, 5])
def test_expert_solves_the_task_in_simulation(seed: int, clock: FakeClock) -> None:
    world = SimWorld(clock)
    task = ReachTouchTask(world)
    task.reset(seed)
    robot = SimRobot(world)
    expert = ScriptedExpert()
    R_down = world.tcp_pose().rotation
    success = False
    q_cmd = robot.read_state().q
    while not task.is_done():
        state = robot.read_state()
        chunk = expert.act(state.ee_pose.translation, task.cube_top_center(), state.t_ns)
        for k in range(1, 3):  # execute the chunk's first steps at 50 Hz, then re-plan
            target = state.ee_pose.translation + chunk.actions[k]
            for _ in range(5):
                q_cmd = q_cmd + _diff_ik_step(world, target, R_down)
                robot.command(q_cmd, gripper=1.0)
                clock.advance(20 * MS)
                robot.read_state()
            if task.is_success():
                success = True
                break
        if success:
            break
    assert success, f"expert did not touch the cube within {task.max_duration_s} s (d={task.tcp_distance_m():.3f})"
    assert task.elapsed_s() < task.max_duration_s
