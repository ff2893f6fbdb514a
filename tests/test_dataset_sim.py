"""Record in the simulated cell, load it back with our loader, replay it: round-trip fidelity and base-frame XYZ."""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.collection.replay import replay_in_sim, replay_on_robot
from robot_stack.collection.session import SimRecordingRig
from robot_stack.dataset import DatasetWriter, load_dataset, validate_layout
from robot_stack.dataset.recorder import Recorder
from robot_stack.dataset.viewer import episode_figure
from robot_stack.errors import DatasetError
from robot_stack.teleop import ExpertTeleop


class _KeepingRecorder(Recorder):
    """The real recorder; also keeps what it was handed, to compare the dataset against."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows, self.frames = [], []

    def add_frame(self, row, frames):
        taken = super().add_frame(row, frames)
        if taken:
            self.rows.append(row)
            self.frames.append({f.camera_id: f for f in frames})
        return taken


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    rig = SimRecordingRig(("front", "side"), fps=10, width=160, height=120, max_duration_s=1.2)
    root = tmp_path_factory.mktemp("sim") / "ds"
    rec = _KeepingRecorder(DatasetWriter(root, rig.spec, rig.calibrations))
    results = []
    try:
        device = ExpertTeleop(rig.task.cube_top_center)
        for seed in (3, 4):
            results.append(rig.record_episode(rec, device, seed))
    finally:
        rig.close()
    return root, rec, results, rig


def test_layout_is_valid_and_totals_match(recorded):
    root, rec, results, _ = recorded
    summary = validate_layout(root)
    assert summary["episodes"] == 2
    assert summary["frames"] == sum(c.length for _, c in results) == len(rec.rows)
    assert summary["video_keys"] == ["observation.images.front", "observation.images.side"]
    assert all(c.dropped_frames == 0 for _, c in results)


def test_loader_round_trip_state_depth_exact_rgb_within_codec(recorded):
    root, rec, results, _ = recorded
    ds = load_dataset(root)
    n0 = results[0][1].length
    ep = ds.load_episode(1)
    rows, frames = rec.rows[n0:], rec.frames[n0:]
    assert ep.length == len(rows) and ep.task == "reach and touch the red cube"
    q = np.array([r.state.q for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(ep.q, q)
    np.testing.assert_array_equal(ep.state[:, -1], np.array([r.state.gripper for r in rows], np.float32))
    np.testing.assert_array_equal(ep.ee_pose[:, :3], np.array([r.state.ee_pose.translation for r in rows], np.float32))
    np.testing.assert_array_equal(ep.q_target, np.array([r.q_target for r in rows], dtype=np.float32))
    np.testing.assert_array_equal(ep.t_ns, [r.host_time_ns for r in rows])
    assert ep.env_state is not None and ep.env_state.shape == (ep.length, 3)
    for cam in ("front", "side"):
        data = ep.cameras[cam]
        orig_depth = np.stack([f[cam].depth for f in frames])
        np.testing.assert_array_equal(data.depth, orig_depth)  # lossless
        np.testing.assert_array_equal(data.t_capture_ns, [f[cam].t_capture_ns for f in frames])
        orig_rgb = np.stack([f[cam].color for f in frames]).astype(np.int16)
        err = np.abs(data.rgb.astype(np.int16) - orig_rgb)
        assert err.mean() < 3.0, f"{cam}: mean abs RGB error {err.mean():.2f} grey levels"
        psnr = 10 * np.log10(255.0**2 / np.mean(err.astype(np.float64) ** 2))
        assert psnr > 32.0, f"{cam}: PSNR {psnr:.1f} dB"
    assert not ep.q.flags.writeable and not ep.cameras["front"].depth.flags.writeable


def test_depth_to_base_xyz_from_dataset_alone(recorded):
    """The recorded calibration maps depth into the base frame: both cameras see the cube top where the sim says."""
    root, rec, _, _ = recorded
    ep = load_dataset(root).load_episode(0)
    cube_top = ep.env_state[0].astype(np.float64)
    for cam in ("front", "side"):
        xyz = ep.xyz_base(cam, 0).reshape(-1, 3)
        rgb = ep.cameras[cam].rgb[0].reshape(-1, 3).astype(int)
        red = (rgb[:, 0] > 120) & (rgb[:, 1] < 60) & (rgb[:, 2] < 60) & np.all(np.isfinite(xyz), axis=1)
        assert red.sum() > 3, f"{cam}: cube not visible"
        top = xyz[red][xyz[red][:, 2] > cube_top[2] - 0.01]
        assert top.size, f"{cam}: no cube-top points"
        assert np.linalg.norm(top[:, :2].mean(0) - cube_top[:2]) < 0.02
        assert abs(np.median(top[:, 2]) - cube_top[2]) < 0.01
    assert ep.cameras["side"].calibration.camera.width == 160  # rescaled from the 1280x960 calibration


def test_highrate_stream_is_the_executor_ticks(recorded):
    root, _, results, _ = recorded
    ep = load_dataset(root).load_episode(0)
    hr = ep.highrate
    assert hr.q_cmd.shape == (hr.t_ns.size, 7) and hr.t_ns.size > 5 * ep.length
    assert np.all(np.diff(hr.t_ns) == 2_000_000)  # 500 Hz executor, fake clock
    assert ep.meta["highrate_samples"] == hr.t_ns.size


def test_replay_reproduces_the_recording(recorded, tmp_path):
    root, _, results, _ = recorded
    ep = load_dataset(root).load_episode(0)
    res = replay_in_sim(ep, "highrate")
    assert res.joint_max_rad < 1e-6 and res.tcp_max_mm < 1e-3  # float32 storage of the recording
    via_executor = replay_in_sim(ep, "actions")
    assert via_executor.tcp_rms_mm < 5.0
    png = episode_figure(ep, tmp_path / "ep.png", replay_tcp=res.tcp_replayed)
    assert png.stat().st_size > 10_000
    with pytest.raises(DatasetError):
        replay_in_sim(ep, "bogus")


def test_sidecar_has_robot_description_and_labels(recorded):
    root, _, results, _ = recorded
    ds = load_dataset(root)
    ep = ds.load_episode(0, rgb=False, depth=False, highrate=False)
    assert ep.robot.name == "panda" and len(ep.robot.urdf_sha256) == 64 and len(ep.robot.joint_names) == 7
    assert ep.meta["seed"] == 3 and ep.meta["teleop"] == "expert" and ep.meta["dropped_frames"] == 0
    np.testing.assert_array_equal(ds.successes(), [r.success for r, _ in results])
    assert ep.cameras["front"].rgb is None


def test_replay_on_a_robot_interface(recorded):
    """The robot path (real arms: same call with the hardware driver) on the kinematic twin with a fake clock."""
    from robot_stack.clock import FakeClock
    from robot_stack.sim.kinematic import KinematicRobot

    root, _, _, _ = recorded
    ep = load_dataset(root).load_episode(0)
    clock = FakeClock(5_000_000_000)
    robot = KinematicRobot(clock=clock, q0=np.asarray(ep.q[0], np.float64))
    res = replay_on_robot(ep, robot, clock)
    # the twin follows the set-points exactly; the recorded sim servos lag them (a few mm at 0.15 m/s)
    assert 0.0 < res.tcp_rms_mm < 15.0 and res.joint_rms_rad < 0.02
    np.testing.assert_allclose(robot.read_state().q, ep.highrate.q_cmd[-1], atol=1e-9)
    far = KinematicRobot(clock=clock, q0=np.asarray(ep.q[0], np.float64) + 0.2)
    with pytest.raises(DatasetError, match="start pose"):
        replay_on_robot(ep, far, clock)
