"""The language-conditioned tabletop suite: placements, success predicates, the scripted expert, the scene sets and the
depth form of an observation (its reference projection against the robot-side projector)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robot_stack.calibration.payload import CALIB_SIZE, calib_vector, calibration_version, xyz_from_depth
from robot_stack.calibration.store import SIM_SCENES, load_calibration
from robot_stack.clock import FakeClock
from robot_stack.errors import CalibrationError, ConfigError, ShapeError
from robot_stack.sim.expert import ExpertConfig, tabletop_expert_actions
from robot_stack.sim.robot_cells import ROBOT_CELLS, SCENE_SET_A, SCENE_SET_B
from robot_stack.sim.scene import scene_with_cameras
from robot_stack.sim.tabletop import (
    INSTRUCTIONS,
    MIN_SEPARATION_M,
    NEAREST_MARGIN_M,
    SCENE_OBJECTS,
    TabletopTask,
    instruction_for,
    place_objects,
)
from robot_stack.sim.world import SimWorld
from robot_stack.stack.config import CameraConfig, load_stack_config
from robot_stack.stack.lockstep import LockstepRig
from robot_stack.types import ActionChunk, CameraModel, CameraObservation, Pose


def test_placements_follow_the_rules() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        placed = place_objects(rng)
        pts = np.stack([xy for xy, _ in placed.values()])
        gaps = np.linalg.norm(pts[:, None] - pts[None], axis=-1)[np.triu_indices(3, 1)]
        assert gaps.min() >= MIN_SEPARATION_M
        dist = np.sort(np.linalg.norm(pts, axis=1))
        assert dist[1] - dist[0] >= NEAREST_MARGIN_M


def test_instruction_lookup_and_unknown_text() -> None:
    assert instruction_for("  Touch the RED cube ").target == "red cube"
    assert len({i.text for i in INSTRUCTIONS}) == len(INSTRUCTIONS) >= 4
    with pytest.raises(ConfigError, match="not in the tabletop suite"):
        instruction_for("dance")


def test_task_needs_the_suite_objects() -> None:
    with pytest.raises(ConfigError, match="task.suite: tabletop"):
        TabletopTask(SimWorld(FakeClock()))


def test_touch_success_and_wrong_object_failure() -> None:
    world = SimWorld(FakeClock(), config=scene_with_cameras(["front"], "vla_a0", objects=SCENE_OBJECTS))
    task = TabletopTask(world, "touch the blue cylinder")
    task.reset(3)
    assert not task.is_done()
    top = world.object_top_center("blue_cylinder")
    assert top[2] == pytest.approx(0.06, abs=1e-3)  # 6 cm tall cylinder standing on the table
    # a wrong object touched first (under the +y finger): the episode fails at once and stays failed
    world.set_object_pose("green_cube", world.tcp_pose().translation + np.array([0.0, 0.048, -0.02]))
    world.clock.advance(20_000_000)
    world.sync_now()
    assert task.is_failure() and task.touched_object() == "green_cube" and task.is_done()
    assert not task.is_success()
    # the target: success
    task.reset(3)
    world.set_object_pose("blue_cylinder", world.tcp_pose().translation - np.array([0.0, 0.0, 0.035]))
    world.clock.advance(2_000_000)
    world.sync_now()
    assert task.is_success() and task.touched_object() == "blue_cylinder"
    assert task.time_to_success_s is not None and not task.is_failure()


def test_nearest_is_resolved_per_episode() -> None:
    world = SimWorld(FakeClock(), config=scene_with_cameras(["front"], "vla_a0", objects=SCENE_OBJECTS))
    task = TabletopTask(world, "touch the object nearest the robot")
    targets = set()
    for seed in range(12):
        task.reset(seed)
        centres = {n: np.linalg.norm(world.object_pose(n).translation[:2]) for n in world.object_names}
        assert task.target == min(centres, key=centres.__getitem__)
        targets.add(task.target)
    assert len(targets) >= 2


@pytest.mark.parametrize("text", [i.text for i in INSTRUCTIONS])
def test_the_scripted_expert_solves_every_instruction(text: str) -> None:
    config = load_stack_config("vla", [f"task.instruction={text}", "calibration.scene=vla_a2"])
    # a small camera: this test is about the expert, not the pixels
    config = config.replace(cameras=(CameraConfig(width=160, height=120),))
    rig = LockstepRig(config, max_duration_s=8.0)
    expert_config = ExpertConfig(max_speed_mps=0.25)

    def expert(obs):  # type: ignore[no-untyped-def]
        kind, goal = rig.task.expert_goal()
        actions = tabletop_expert_actions(obs.state.ee_pose.translation, kind, goal, expert_config)
        return ActionChunk(obs.t_obs_ns, 0.1, actions, "ee_delta_xyz", np.ones(8))

    try:
        result = rig.run_episode(expert, 5)
    finally:
        rig.close()
    assert result.success, result
    assert result.instruction == text and result.touched == rig.task.target


def test_scene_sets_have_calibration_files_matching_the_sim() -> None:
    assert set(SIM_SCENES) == set(ROBOT_CELLS)  # the calibration store's list of simulated scenes follows the cells
    assert not set(SCENE_SET_A) & set(SCENE_SET_B)
    for scene in (*SCENE_SET_A, *SCENE_SET_B):
        cal = load_calibration(scene, "front")
        spec = ROBOT_CELLS[scene].cameras[0]
        assert np.allclose(cal.T_base_cam.translation, spec.pos, atol=1e-6)
        forward = cal.T_base_cam.rotation[:, 2]  # optical z, base frame
        aim = np.subtract(spec.target, spec.pos)
        assert np.allclose(forward, aim / np.linalg.norm(aim), atol=1e-6)
    positions = {tuple(ROBOT_CELLS[s].cameras[0].pos) for s in (*SCENE_SET_A, *SCENE_SET_B)}
    assert len(positions) == len(SCENE_SET_A) + len(SCENE_SET_B)


def test_depth_form_reference_matches_the_robot_side_projector() -> None:
    from robot_stack.sim.calibration import render_sim_views

    view = render_sim_views(("front",), seed=4)["front"]
    cal = load_calibration("sim_tabletop", "front")
    projector = cal.projector()
    obs = projector.observe(view.frame)
    assert obs.calib is not None and obs.calib.shape == (CALIB_SIZE,) and obs.calib_version == cal.version
    ref = xyz_from_depth(view.frame.depth, obs.calib, stride=8, offset=4)
    robot = obs.xyz_base[4::8, 4::8]
    assert np.array_equal(np.isnan(ref), np.isnan(robot))
    assert np.nanmax(np.abs(ref - robot)) < 1e-5
    cam = xyz_from_depth(view.frame.depth, obs.calib, stride=8, offset=4, frame="camera")
    back = cal.T_base_cam.apply(cam.reshape(-1, 3).astype(np.float64)).reshape(cam.shape)
    assert np.nanmax(np.abs(back - ref)) < 1e-5
    depth_only = projector.observe(view.frame, xyz=False)
    assert depth_only.xyz_base is None
    with pytest.raises(ShapeError, match="XYZ was not computed"):
        _observation(depth_only).arrays()
    arrays = _observation(depth_only).arrays(depth_form=True)
    assert set(arrays) == {"state", "front/rgb", "front/depth", "front/calib"}


def test_calibration_version_and_distortion_refusal() -> None:
    cal = load_calibration("vla_a0", "front")
    doc = cal.to_dict()
    assert calibration_version(doc) == cal.version
    doc["extrinsics"]["translation_xyz_m"][0] += 0.001
    assert calibration_version(doc) != cal.version
    distorted = CameraModel(640, 480, 400, 400, 320, 240, np.array([0.1, 0, 0, 0, 0]))
    with pytest.raises(CalibrationError, match="pinhole-only"):
        calib_vector(distorted, Pose.identity(), 0.001)
    with pytest.raises(ShapeError, match="needs xyz_base, or depth and calib"):
        CameraObservation("front", np.zeros((4, 4, 3), np.uint8), None, 0)


def _observation(cam: CameraObservation):  # type: ignore[no-untyped-def]
    from robot_stack.types import Observation, RobotState

    state = RobotState(0, np.zeros(7), np.zeros(7), Pose.identity())
    return dataclasses.replace(Observation(0, state), cameras=(cam,))
