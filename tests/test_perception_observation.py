"""Observation builder: base-frame XYZ per camera, crop, fused two-camera cloud, memory-bank history."""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.calibration.store import load_calibration
from robot_stack.errors import CalibrationError, ConfigError, ShapeError
from robot_stack.perception import MemoryBank, MemoryBankConfig, ObservationBuilder, ObservationConfig
from robot_stack.types import CameraObservation, Frame, Pose, RobotState

CROP = ((0.0, -0.5, -0.01), (0.9, 0.5, 0.8))


@pytest.fixture(scope="module")
def views():  # noqa: ANN201
    from robot_stack.calibration.report import render_sim_views

    return render_sim_views(("front", "side"), seed=4)


def state(t_ns: int = 10**12) -> RobotState:
    return RobotState(t_ns, np.zeros(7), np.zeros(7), Pose.identity("base", "tcp"))


def builder(views, **kw) -> ObservationBuilder:  # noqa: ANN001
    import dataclasses

    cals = {}
    for cid, view in views.items():
        cal = load_calibration("sim_tabletop", cid)
        cals[cid] = dataclasses.replace(cal, camera=view.camera)  # intrinsics at the rendered size
    return ObservationBuilder(cals, ObservationConfig(**kw))


def test_xyz_maps_in_base_frame_agree_between_cameras(views) -> None:
    b = builder(views, crop=CROP)
    obs = b.build([views["front"].frame, views["side"].frame], state(), "touch the cube")
    front, side = obs.cameras
    assert front.xyz_base.shape == (480, 640, 3) and front.xyz_base.dtype == np.float32
    # table top is z = 0 in the base frame, from both cameras
    for cam in (front, side):
        z = cam.xyz_base[..., 2]
        assert np.nanmedian(z) == pytest.approx(0.0, abs=0.003)
        assert np.isnan(cam.xyz_base).any()  # background / outside the crop
        assert np.nanmin(cam.xyz_base[..., 0]) >= 0.0 and np.nanmax(cam.xyz_base[..., 2]) <= 0.8
    assert obs.t_obs_ns == min(views["front"].frame.t_capture_ns, views["side"].frame.t_capture_ns, 10**12)
    assert set(obs.arrays()) == {"state", "front/rgb", "front/xyz", "side/rgb", "side/xyz"}


def test_fused_cloud_is_cropped_and_voxelised(views) -> None:
    frames = [views["front"].frame, views["side"].frame]
    dense, _ = builder(views, crop=CROP).fused_cloud(frames)
    sparse, colors = builder(views, crop=CROP, voxel_m=0.01).fused_cloud(frames)
    assert sparse.dtype == np.float32 and colors.dtype == np.uint8 and len(colors) == len(sparse)
    assert len(sparse) < len(dense) / 5
    lo, hi = np.array(CROP[0]), np.array(CROP[1])
    assert np.all(sparse >= lo - 1e-6) and np.all(sparse <= hi + 1e-6)
    # one centroid per occupied 1 cm voxel (Open3D's grid starts half a voxel below the cloud's minimum)
    origin = dense.astype(np.float64).min(axis=0) - 0.005
    occupied = np.unique(np.floor((dense - origin) / 0.01).astype(int), axis=0)
    assert abs(len(sparse) - len(occupied)) <= 0.01 * len(occupied)


def test_unknown_camera_and_bad_config(views) -> None:
    b = builder({"front": views["front"]})
    with pytest.raises(CalibrationError, match="calibrations only for"):
        b.build([views["side"].frame], state())
    with pytest.raises(ShapeError, match="one frame per camera"):
        b.build([views["front"].frame, views["front"].frame], state())
    with pytest.raises(ConfigError):
        ObservationConfig(voxel_m=0.0)
    with pytest.raises(CalibrationError, match="no calibration"):
        ObservationBuilder.from_scene("sim_tabletop", ["nonexistent_cam"])


def obs_with(value: int, t: int) -> CameraObservation:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, : value % 32] = 255  # a bar that grows with the scene "state"
    rgb[value % 32 :, :4] = 128
    return CameraObservation("front", rgb, np.zeros((32, 32, 3), np.float32), t)


def test_memory_bank_skips_still_periods_and_samples_motion() -> None:
    bank = MemoryBank(MemoryBankConfig(capacity=40, k=4, thumb=8))
    states = [2] * 20 + list(range(3, 23))  # 20 still frames, then 20 frames of motion
    for t, s in enumerate(states):
        bank.add(obs_with(s, t))
    picked = bank.sample()
    times = [o.t_capture_ns for o in picked]
    assert len(picked) == 4 and times == sorted(times)
    assert sum(t < 20 for t in times) <= 1  # the still period contributes at most one frame
    assert max(times) < 39  # the current frame is not history


def test_builder_appends_history_frames(views) -> None:
    b = builder({"front": views["front"]}, memory_bank=MemoryBankConfig(capacity=8, k=2))
    frame = views["front"].frame
    for i in range(5):
        color = frame.color.copy()
        color[:, : 40 * (i + 1)] = 0
        f = Frame(color, frame.depth, frame.depth_scale, frame.t_capture_ns + i, "front", i)
        obs = b.build([f], state())
    names = [c.camera_id for c in obs.cameras]
    assert names[0] == "front" and names[1:] == ["front@h1", "front@h2"]
    assert "front@h2/xyz" in obs.arrays()
