"""Three arms in the simulator: descriptions, shared kinematics (MuJoCo = pinocchio), cells, IK of the 5-DoF SO-101,
stacks built for each arm from its description, and the reach-and-touch task driven by the expert on each."""

from __future__ import annotations

import logging

import mujoco
import numpy as np
import pytest

from robot_stack.clock import FakeClock
from robot_stack.errors import ConfigError, SimError
from robot_stack.kinematics.ik import IKConfig, ik_for
from robot_stack.kinematics.reach import ReachPolicy, ReachStats, solve_pose_sequence_checked
from robot_stack.robots.registry import EMBODIMENTS, ROBOT_MODELS, get_embodiment
from robot_stack.sim.robot import SimRobot
from robot_stack.sim.robot_cells import ROBOT_CELLS, cell_for, default_scene
from robot_stack.sim.scene import scene_with_cameras
from robot_stack.sim.world import SimWorld
from robot_stack.stack.build import build_decoder, build_executor
from robot_stack.stack.config import load_stack_config, with_robot
from robot_stack.types import Pose

ARMS = ("panda", "ur5", "so101")


def test_three_arms_are_described() -> None:
    assert ROBOT_MODELS == ARMS
    dofs = {name: e.dof for name, e in EMBODIMENTS.items()}
    assert dofs == {"panda": 7, "ur5": 6, "so101": 5}
    assert [e.orientation_dof for e in EMBODIMENTS.values()] == [3, 3, 2]
    with pytest.raises(ConfigError, match="available: panda, ur5, so101"):
        get_embodiment("kuka")


@pytest.fixture(scope="module", params=ARMS)
def world(request: pytest.FixtureRequest) -> SimWorld:
    return SimWorld(FakeClock(start_ns=10**9), config=scene_with_cameras(["front"], robot=request.param))


def test_simulator_and_ik_share_the_kinematics(world: SimWorld) -> None:
    """The TCP MuJoCo simulates equals pinocchio's FK of the same joints (same URDF text, TCP link included)."""
    emb = world.embodiment
    ik = ik_for(emb)
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = rng.uniform(emb.limits.lower, emb.limits.upper)
        world.set_arm_q(q)
        sim, pin_ = world.tcp_pose(), ik.fk(q)
        assert np.linalg.norm(sim.translation - pin_.translation) < 1e-5
        assert np.allclose(sim.rotation, pin_.rotation, atol=1e-5)


def test_reset_puts_arm_home_and_cube_in_its_task_region(world: SimWorld) -> None:
    emb = world.embodiment
    region = emb.task_region
    for seed in range(5):
        world.reset(seed)
        np.testing.assert_allclose(world.arm_q(), emb.home_q, atol=1e-9)
        cube = world.cube_pose().translation
        assert region.lower[0] <= cube[0] <= region.upper[0] and region.lower[1] <= cube[1] <= region.upper[1]
        assert world.gripper_opening() == pytest.approx(1.0)
    home_tcp = ik_for(emb).fk(emb.home_q).translation
    assert emb.workspace.contains(home_tcp)
    bodies = {world.model.body(int(world.model.geom_bodyid[g])).name for g in world.robot_geoms}
    assert set(emb.gripper.bodies) <= bodies and emb.base_link in bodies and "cube" not in bodies


def test_arm_holds_its_home_posture_under_its_servos(world: SimWorld) -> None:
    emb = world.embodiment
    world.reset(0)
    robot = SimRobot(world)
    assert robot.joint_names == emb.arm_joints and robot.limits is emb.limits
    for _ in range(200):
        world.clock.advance(2_000_000)
        robot.command(emb.home_q, 1.0)
    np.testing.assert_allclose(robot.read_state().q, emb.home_q, atol=1e-3)


def test_gripper_kinds() -> None:
    """Fingers and the jaw map an opening in [0, 1] to their joint; the UR5's rigid tool reads open and ignores it."""
    so101 = SimWorld(FakeClock(), config=scene_with_cameras(["front"], robot="so101"))
    so101.set_arm_q(so101.embodiment.home_q, gripper=0.0)
    assert so101.gripper_opening() == pytest.approx(0.0)
    jaw = so101.model.joint("gripper").qposadr[0]
    assert so101.data.qpos[jaw] == pytest.approx(so101.embodiment.gripper.closed)
    ur5 = SimWorld(FakeClock(), config=scene_with_cameras(["front"], robot="ur5"))
    ur5.set_arm_q(ur5.embodiment.home_q, gripper=0.0)
    assert ur5.gripper_opening() == 1.0
    assert mujoco.mj_name2id(ur5.model, mujoco.mjtObj.mjOBJ_ACTUATOR, "act_gripper") == -1


def test_every_arm_has_a_cell_with_calibrated_cameras() -> None:
    from robot_stack.calibration.store import load_calibration

    for arm in ARMS:
        cell = ROBOT_CELLS[default_scene(arm)]
        assert cell.robot == arm
        for camera in cell.cameras:
            cal = load_calibration(cell.scene, camera.name)
            assert cal.robot == arm and cal.method == "sim_ground_truth"
            np.testing.assert_allclose(cal.T_base_cam.translation, camera.pos, atol=1e-9)
    with pytest.raises(SimError, match="is the ur5 cell"):
        cell_for("sim_ur5", "so101")
    assert cell_for("some_test_scene", "so101").scene == "sim_so101"


# ---------------------------------------------------------------------------------------- 5-DoF inverse kinematics


def test_so101_ik_reaches_a_reachable_pose_exactly() -> None:
    emb = get_embodiment("so101")
    ik = ik_for(emb)
    assert ik.reachable_orientation
    target = ik.fk(np.array([0.3, -0.6, 0.5, 1.2, -0.4]))
    result = ik.solve_with_info(target, emb.home_q, restarts=4)
    assert result.converged
    assert result.position_error_m < 1e-4 and result.rotation_error_rad < 2e-3
    assert result.unreachable_rotation_rad < 2e-3


def test_so101_ik_reports_the_unreachable_part_of_an_orientation(caplog: pytest.LogCaptureFixture) -> None:
    """Tilting the jaws out of the arm's vertical plane cannot be done by 5 joints at that position: the position is
    reached exactly and the unreachable rotation is reported (result, pose-sequence IK, its log line, its stats)."""
    emb = get_embodiment("so101")
    ik = ik_for(emb)
    reachable = ik.fk(np.array([0.0, -0.6, 0.5, 1.2, 0.0]))
    tilt = 0.3  # rad about the base x axis: turns the approach direction out of the x-z plane the arm moves in
    rot = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(tilt), -np.sin(tilt)], [0.0, np.sin(tilt), np.cos(tilt)]])
    target = Pose(rot @ reachable.rotation, reachable.translation, "base", "tcp")
    result = ik.solve_with_info(target, emb.home_q)
    assert result.converged
    assert result.position_error_m < 1e-4
    assert result.unreachable_rotation_rad > 0.1
    assert result.judged_rotation_error_rad < 2e-3

    stats = ReachStats()
    with caplog.at_level(logging.INFO, logger="robot_stack.kinematics.reach"):
        solved = solve_pose_sequence_checked(ik, [target, target], emb.home_q, 50, "test", ReachPolicy(stats=stats))
    assert len(solved.kept) == 2 and np.all(solved.unreachable_rotation_rad > 0.1)
    assert stats.orientation_short == 2 and stats.max_unreachable_rotation_rad > 0.1
    assert any("not all of their orientation" in r.getMessage() for r in caplog.records)


def test_a_fully_actuated_arm_reports_nothing_unreachable() -> None:
    emb = get_embodiment("ur5")
    ik = ik_for(emb)
    assert not ik.reachable_orientation
    target = ik.fk(emb.home_q + 0.2)
    result = ik.solve_with_info(target, emb.home_q)
    assert result.converged and result.unreachable_rotation_rad == 0.0 and result.rotation_error_rad < 1e-3
    # the reachable mode on a 6-joint arm finds the whole orientation reachable
    full = ik_for(emb, IKConfig(orientation="reachable")).solve_with_info(target, emb.home_q)
    assert full.converged and full.rotation_error_rad < 2e-3 and full.unreachable_rotation_rad < 2e-3


def test_so101_tool_down_is_reached_over_its_task_region_near_the_table() -> None:
    emb = get_embodiment("so101")
    ik = ik_for(emb)
    for x in (0.18, 0.22, 0.26):
        for y in (-0.08, 0.0, 0.08):
            result = ik.solve_with_info(Pose(emb.tool_down, np.array([x, y, 0.05])), emb.home_q, restarts=2)
            assert result.converged and result.rotation_error_rad < 0.01, (x, y)


# ------------------------------------------------------------------------------------------- stacks from descriptions


def test_robot_flag_switches_the_preset_to_the_arm_and_its_cell() -> None:
    for arm in ARMS:
        config = load_stack_config("demo", robot=arm)
        emb = get_embodiment(arm)
        assert config.robot.model == arm and config.robot.robot_id == f"sim-{arm}-0"
        assert config.calibration.scene == default_scene(arm)
        assert config.control_rate_hz == emb.control_rate_hz and config.workspace is None
        assert config.with_overrides(["control.workspace_from_robot=true"]).workspace == emb.workspace
        assert config.policy.action_head == "latent_vq"
    assert load_stack_config("demo").control_rate_hz == 500.0  # the Panda's, as before
    explicit = load_stack_config("demo", ["control.rate_hz=250"], robot="so101")
    assert explicit.control_rate_hz == 250.0
    hardware = with_robot(load_stack_config("hardware"), "ur5")
    assert hardware.robot.model == "ur5" and hardware.robot.kind == "factory"
    assert hardware.calibration.scene == "cell_a"  # a real cell keeps its own calibration scene
    options = load_stack_config("hardware", ["robot.options.host=192.168.1.10"])
    assert options.robot.options == {"host": "192.168.1.10"}
    with pytest.raises(ConfigError, match="has no description"):
        load_stack_config("demo", ["robot.model=kuka"])


@pytest.mark.parametrize("arm", ARMS)
def test_decoders_and_executor_come_from_the_description(arm: str) -> None:
    from robot_stack.sim.kinematic import KinematicRobot

    config = load_stack_config("demo", robot=arm)
    emb = config.embodiment
    ee, _ = build_decoder(config, "continuous", "ee_delta_xyz")
    assert ee.ik.joint_names == emb.arm_joints
    np.testing.assert_allclose(ee.ik.upper, emb.limits.upper - 0.025)  # the filter's margin + the IK slack
    np.testing.assert_allclose(ee._fixed_r, emb.tool_down)
    np.testing.assert_allclose(ee.reach.fallback_q, emb.home_q)
    joint, _ = build_decoder(config, "continuous", "joint_position")
    assert joint.joint_names == emb.arm_joints
    robot = KinematicRobot(clock=FakeClock(), robot=arm)
    executor = build_executor(config, robot, FakeClock())
    assert executor.period_ns == round(1e9 / emb.control_rate_hz)
    assert executor.safety.limits is emb.limits


@pytest.mark.parametrize("arm", ["ur5", "so101"])
def test_expert_touches_the_cube_with_each_arm(arm: str) -> None:
    """The reach-and-touch task, robot-agnostic: the scripted expert (within the arm's TCP speed) through the
    stack's decoder (the arm's IK) and executor, lockstep."""
    from robot_stack.sim.expert import ExpertConfig, ScriptedExpert
    from robot_stack.stack.lockstep import LockstepRig

    rig = LockstepRig(load_stack_config("demo", robot=arm), max_duration_s=8.0)
    try:
        speed = min(0.15, rig.config.embodiment.max_tcp_speed_mps)
        expert = ScriptedExpert(ExpertConfig(max_speed_mps=speed))
        result = rig.run_episode(
            lambda obs: expert.act(obs.state.ee_pose.translation, rig.task.cube_top_center(), obs.t_obs_ns), 1001
        )
        assert result.success, result
    finally:
        rig.close()


@pytest.mark.parametrize("scene", ["sim_ur5", "sim_so101"])
def test_hand_eye_procedure_of_each_arm(scene: str) -> None:
    """The arm's own hand-eye procedure (its mount, board, stations; projected corners with 0.5 px noise, 4 misread
    stations) recovers its cell's camera to well under a millimetre."""
    from robot_stack.calibration.handeye import calibrate_hand_eye
    from robot_stack.sim.handeye import projected_stations

    stations = projected_stations(20, seed=1, corner_noise_px=0.5, perturb_stations=4, scene_name=scene)
    assert len(stations.samples) >= 12
    result = calibrate_hand_eye(list(stations.samples), "eye_to_hand", "park", camera=stations.camera)
    dt, dr = result.X.distance_to(stations.truth)
    assert dt < 1e-3 and np.rad2deg(dr) < 0.1
    assert set(stations.perturbed) <= set(result.rejected)


def test_up_robot_sets_the_graph_arguments() -> None:
    """``robot-stack up sim --robot so101``: every node gets the arm; the sim graph its cell, the cross-embodiment
    policy and its decoder; the hardware graph only the arm (its cell and policy are the site's)."""
    from robot_stack.graph.cli import robot_arguments
    from robot_stack.graph.spec import load_graph

    sim = load_graph("sim")
    args = robot_arguments(sim.defaults(), "so101")
    assert args["robot"] == "so101" and args["scene"] == "sim_so101" and args["decoder"] == "latent_vq"
    assert args["manifest"].endswith("reach-xemb/reach-xemb-vq.yaml")
    nodes = {n.name: n for n in sim.resolve(args)}
    for name in ("sim_bridge", "camera", "policy_client", "executor"):
        assert nodes[name].parameters["robot"] == "so101", name
    assert robot_arguments(load_graph("hardware").defaults(), "ur5") == {"robot": "ur5"}


def test_fine_cad_meshes_are_simplified_for_the_simulator(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The SO-101's CAD meshes (320k faces, ~0.6 s per rendered frame on a CPU) are vertex-clustered on a 3 mm grid:
    a few percent of the faces, every vertex within the grid diagonal of the surface it came from."""
    from robot_stack.robots.embodiment import example_robot_data_dir
    from robot_stack.sim.scene import cluster_mesh, read_stl

    stl = example_robot_data_dir() / "so_arm_description/meshes/so101/wrist_roll_pitch_so101_v2.stl"
    triangles = read_stl(stl)
    verts, faces = cluster_mesh(triangles, 0.003)
    assert len(faces) < 0.1 * len(triangles) and faces.max() < len(verts)
    corners = triangles.reshape(-1, 3)
    nearest = np.min(np.linalg.norm(verts[:, None, :] - corners[None, ::7, :], axis=-1), axis=1)
    assert np.percentile(nearest, 95) < 0.003 * np.sqrt(3) + 0.002  # (corners subsampled for speed)
    world = SimWorld(FakeClock(), config=scene_with_cameras(["front"], robot="so101"))
    assert world.model.nmeshface < 20_000
    bad = tmp_path / "ascii.stl"
    bad.write_text("solid x\nendsolid x\n" * 10)
    with pytest.raises(SimError, match="binary STL"):
        read_stl(bad)


def test_scenarios_specialise_for_each_arm() -> None:
    from robot_stack.hil.scenario import Scenario, load_scenario

    limits = load_scenario("scenarios/limits.yaml")
    assert limits.for_robot("panda").faults == limits.faults and limits.for_robot("panda").robot == "panda"
    so101 = limits.for_robot("so101")
    assert so101.robot == "so101" and so101.faults[0].params["target"] == [0.5, 0.0, 0.05]
    assert so101.faults[1].params["body"] == ""  # the arm's own hand
    assert so101.expect == limits.expect and so101.rate_hz is None  # the arm's rate
    raw = {"name": "x", "robots": {"ur5": {"description": "not replaceable"}}}
    with pytest.raises(ConfigError, match="may replace"):
        Scenario.from_dict(raw)
    with pytest.raises(ConfigError, match="has no description"):
        limits.for_robot("kuka")


def test_one_shipped_policy_file_serves_all_three_arms() -> None:
    """``--robot panda|ur5|so101`` serve the same shipped cross-embodiment policy (reach-xemb-vq, trained on episodes
    of all three arms): its graph takes each arm's own state vector, and its tokenizer decodes the same tokens for
    each arm, the SO-101's within its slower TCP speed."""
    from robot_stack.decoders.vq import LatentVQDecoder, VqManifest
    from robot_stack.policy.manifest import PolicyManifest
    from robot_stack.policy.runtime import OnnxPolicy

    paths = {arm: load_stack_config("demo", robot=arm).policy.manifest_path() for arm in ARMS}
    assert len(set(paths.values())) == 1 and paths["so101"].is_file()
    manifest = PolicyManifest.load(paths["so101"])
    assert manifest.action_head == "latent_vq" and manifest.model_id == "reach-xemb-vq"
    vq = VqManifest.load(paths["so101"].parent / "reach-xemb-vq-tokenizer.yaml")
    assert vq.robot_types == ARMS

    policy = OnnxPolicy(manifest, "cpu", intra_op_threads=1)
    rgb = np.zeros((480, 640, 3), np.uint8)
    xyz = np.full((480, 640, 3), np.nan, np.float32)
    for arm in ARMS:
        emb = get_embodiment(arm)
        state = np.concatenate([emb.home_q, [0.3, 0.0, 0.3, 1.0]]).astype(np.float32)  # q, TCP xyz, gripper
        tokens = policy.run({"front/rgb": rgb, "front/xyz": xyz, "state": state})["tokens"]
        assert tokens.shape == vq.token_shape

    rng = np.random.default_rng(0)
    tokens = [rng.integers(0, 64, vq.token_shape) for _ in range(50)]

    def mean_speed(arm: str) -> float:
        """Mean over the tokens of the fastest step of the decoded chunk, m/s."""
        decoder = LatentVQDecoder(vq, robot_type=arm)
        steps = [np.linalg.norm(np.diff(decoder.decode_tokens(t), axis=0), axis=1).max() for t in tokens]
        return float(np.mean(steps)) * vq.control_rate_hz

    so101, panda = mean_speed("so101"), mean_speed("panda")
    assert so101 <= 1.1 * get_embodiment("so101").max_tcp_speed_mps < panda  # 0.10 m/s described vs the Panda's
