"""Motion-track decoding: two-view triangulation -> robust rigid fit -> TCP poses -> IK, against synthetic ground
truth projected with the shipped calibrations (front + side)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_stack.calibration.store import load_calibration
from robot_stack.decoders import available_decoders, get_decoder
from robot_stack.decoders.ee_delta import R_DOWN
from robot_stack.decoders.motion_tracks import (
    PANDA_HAND_KEYPOINTS,
    GripperKeypoints,
    MotionTrackDecoder,
    MotionTracks,
)
from robot_stack.errors import ConfigError, DecodeError, ShapeError
from robot_stack.geometry import kabsch, rotation_angle, so3_exp, triangulate, triangulate_dlt
from robot_stack.kinematics.ik import panda_ik
from robot_stack.robots import panda
from robot_stack.sim.calibration import sim_side_calibration
from robot_stack.types import ActionChunk, RobotState

MS = 1_000_000


@pytest.fixture(scope="module")
def mt() -> MotionTracks:
    return MotionTracks.from_store("sim_tabletop", ("front", "side"))


@pytest.fixture(scope="module")
def ik():
    return panda_ik()


def _random_poses(rng: np.random.Generator, n: int, tilt_deg: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Gripper-down TCP poses tilted up to ``tilt_deg`` about a random axis, TCP in the reach workspace."""
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    rot = R_DOWN @ so3_exp(axis * np.deg2rad(rng.uniform(0.0, tilt_deg, (n, 1))))
    pos = np.column_stack([rng.uniform(0.3, 0.7, n), rng.uniform(-0.25, 0.25, n), rng.uniform(0.05, 0.45, n)])
    return rot, pos


def _errors(est_r, est_p, rot, pos) -> tuple[np.ndarray, np.ndarray]:
    """(translation error mm, rotation error deg) per pose."""
    return (
        np.linalg.norm(est_p - pos, axis=1) * 1e3,
        np.rad2deg(rotation_angle(np.swapaxes(est_r, 1, 2) @ rot)),
    )


# ------------------------------------------------------------------------------------------------ geometry


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_kabsch_recovers_a_rigid_transform(seed):
    rng = np.random.default_rng(seed)
    model = rng.normal(size=(6, 3)) * 0.1
    r = so3_exp(rng.normal(size=3))
    t = rng.normal(size=3)
    r_est, t_est = kabsch(model, model @ r.T + t)
    np.testing.assert_allclose(r_est, r, atol=1e-9)
    np.testing.assert_allclose(t_est, t, atol=1e-9)
    assert np.linalg.det(r_est) == pytest.approx(1.0)


def test_opencv_triangulation_matches_numpy_dlt(mt):
    rng = np.random.default_rng(3)
    pts = rng.uniform([0.3, -0.2, 0.0], [0.7, 0.2, 0.5], (50, 3))
    p1, p2 = mt.views[0].projection, mt.views[1].projection
    x1 = (pts @ p1[:, :3].T + p1[:, 3])[:, :2] / (pts @ p1[:, :3].T + p1[:, 3])[:, 2:]
    x2 = (pts @ p2[:, :3].T + p2[:, 3])[:, :2] / (pts @ p2[:, :3].T + p2[:, 3])[:, 2:]
    for hom in (triangulate(p1, p2, x1, x2), triangulate_dlt(p1, p2, x1, x2)):
        np.testing.assert_allclose(hom[:, :3] / hom[:, 3:], pts, atol=1e-9)


def test_keypoint_model_is_validated():
    assert PANDA_HAND_KEYPOINTS.k == 9 and len(set(PANDA_HAND_KEYPOINTS.names)) == 9
    flat = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0.1, 0.1, 0]])
    with pytest.raises(ConfigError, match="coplanar"):
        GripperKeypoints(("a", "b", "c", "d"), flat)
    with pytest.raises(ConfigError, match="K>=4"):
        GripperKeypoints(("a", "b", "c"), flat[:3])


def test_side_calibration_file_is_the_simulator_ground_truth():
    shipped = load_calibration("sim_tabletop", "side")
    truth = sim_side_calibration()
    a, b = shipped.camera, truth.camera
    assert (a.width, a.height) == (b.width, b.height)
    np.testing.assert_allclose([a.fx, a.fy, a.cx, a.cy], [b.fx, b.fy, b.cx, b.cy], rtol=1e-12)
    dt, dr = shipped.T_base_cam.distance_to(truth.T_base_cam)
    assert dt < 1e-9 and dr < 1e-7
    # the demo's default camera is untouched
    assert load_calibration("sim_tabletop", "front").camera_id == "front"


# ------------------------------------------------------------------------------------------ pose accuracy


def test_forward_then_inverse_is_exact_without_noise(mt):
    rot, pos = _random_poses(np.random.default_rng(0), 50)
    tracks = mt.project(rot, pos)
    assert set(tracks) == {"front", "side"} and tracks["front"].shape == (50, 9, 2)
    for cid, cal in zip(mt.camera_ids, mt.calibrations, strict=True):  # the sampled poses are seen by both cameras
        assert np.all((tracks[cid] >= 0) & (tracks[cid] <= [cal.camera.width - 1, cal.camera.height - 1]))
    est = mt.estimate(tracks)
    et, er = _errors(est.rotations, est.positions, rot, pos)
    assert et.max() < 1e-6 and er.max() < 1e-5
    assert est.inliers.all() and np.nanmax(est.reprojection_error_px) < 1e-6


def test_accuracy_at_one_pixel_noise(mt):
    """The issue's target, ≤3 mm / ≤1° at 1 px Gaussian noise (σ = 1 px on u and v, every keypoint, both views),
    holds for 95 % of 300 random poses with the demo's views (front 640x480, side 1280x960); measured here:
    p95 1.7 mm / 0.89°, mean 0.86 mm / 0.45°."""
    rng = np.random.default_rng(1)
    rot, pos = _random_poses(rng, 300)
    tracks = {c: t + rng.normal(size=t.shape) for c, t in mt.project(rot, pos).items()}
    est = mt.estimate(tracks)
    et, er = _errors(est.rotations, est.positions, rot, pos)
    assert et.mean() <= 3.0 and er.mean() <= 1.0, (et.mean(), er.mean())
    assert np.percentile(et, 95) <= 3.0 and np.percentile(er, 95) <= 1.0, (np.percentile(et, 95), np.percentile(er, 95))
    # the maximum-likelihood refinement improves on triangulation + Kabsch alone
    from robot_stack.decoders.motion_tracks import MotionTrackConfig

    raw = MotionTracks(mt.calibrations, config=MotionTrackConfig(refine=False)).estimate(tracks)
    et_raw, er_raw = _errors(raw.rotations, raw.positions, rot, pos)
    assert er.mean() < er_raw.mean() and et.mean() < et_raw.mean() * 1.02


def test_one_keypoint_corrupted_by_50px_is_rejected(mt):
    rng = np.random.default_rng(2)
    n = 300
    rot, pos = _random_poses(rng, n)
    tracks = {c: t + rng.normal(size=t.shape) for c, t in mt.project(rot, pos).items()}
    bad_kp = rng.integers(0, 9, n)
    direction = rng.normal(size=(n, 2))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    view = rng.integers(0, 2, n)
    for i in range(n):
        tracks[mt.camera_ids[view[i]]][i, bad_kp[i]] += 50.0 * direction[i]
    est = mt.estimate(tracks)
    assert not est.inliers[np.arange(n), bad_kp].any()  # every corrupted keypoint flagged
    et, er = _errors(est.rotations, est.positions, rot, pos)
    assert et.mean() <= 3.0 and er.mean() <= 1.1, (et.mean(), er.mean())
    assert et.max() < 10.0 and er.max() < 5.0  # no pose dragged away by the outlier


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_input_raises_typed_errors(mt):
    rot, pos = _random_poses(np.random.default_rng(4), 4)
    good = mt.project(rot, pos)
    nan = {c: t.copy() for c, t in good.items()}
    nan["side"][2, 5, 0] = np.nan
    with pytest.raises(ShapeError, match="step 2 keypoint"):
        mt.estimate(nan)
    with pytest.raises(ShapeError, match="missing \\['side'\\]"):
        mt.estimate({"front": good["front"]})
    with pytest.raises(ShapeError, match="unknown \\['wrist'\\]"):
        mt.estimate({**good, "wrist": good["side"]})
    with pytest.raises(ShapeError, match="expected \\(horizon>=1, 9, 2\\)"):
        mt.estimate({"front": good["front"][:, :5], "side": good["side"][:, :5]})
    with pytest.raises(ShapeError, match="disagree on the horizon"):
        mt.estimate({"front": good["front"], "side": good["side"][:3]})
    with pytest.raises(ShapeError, match="horizon"):
        mt.actions_to_tracks(np.zeros((4, 10), np.float32))
    # views swapped (a camera-order mistake in the model): the tracks describe no rigid gripper
    with pytest.raises(DecodeError, match="consistent"):
        mt.estimate({"front": good["side"], "side": good["front"]})
    # keypoints behind a camera: a pose behind the side camera has no track there ...
    behind_pos = np.array([[0.45, -1.2, 0.7]])
    with pytest.raises(DecodeError, match="behind that camera"):
        mt.project(R_DOWN[None], behind_pos)
    # ... and pinhole-projected points from behind the side camera triangulate behind it: rejected, not decoded
    pts = R_DOWN @ PANDA_HAND_KEYPOINTS.points_tcp.T
    pts = pts.T + behind_pos
    tr = dict(good)
    for cid, view, cal in zip(mt.camera_ids, mt.views, mt.calibrations, strict=True):
        pc = view.to_camera(pts)
        uv = np.stack(
            [cal.camera.fx * pc[:, 0] / pc[:, 2] + cal.camera.cx, cal.camera.fy * pc[:, 1] / pc[:, 2] + cal.camera.cy],
            1,
        )
        tr[cid] = np.repeat(uv[None], 4, axis=0)
    with pytest.raises(DecodeError, match="behind a camera"):
        mt.estimate(tr)
    with pytest.raises(ConfigError, match="two"):
        MotionTracks(mt.calibrations[:1])


# ---------------------------------------------------------------------------------------- end-to-end decode


def test_registered_decoder_decodes_a_chunk_to_joints(mt, ik):
    assert "motion_tracks" in available_decoders()
    decoder = get_decoder("motion_tracks", tracks=mt, ik=ik, latency_offset_s=0.02)
    assert isinstance(decoder, MotionTrackDecoder)
    q0 = panda.HOME_Q
    state = RobotState(5_000 * MS, q0, np.zeros(7), ik.fk(q0), gripper=1.0)
    # a reach from the home pose toward the table, slightly tilting the gripper
    h = 8
    k = np.arange(h)[:, None] / (h - 1)
    pos = state.ee_pose.translation + k * np.array([0.15, 0.1, -0.25])
    rot = np.stack([state.ee_pose.rotation @ so3_exp(np.array([0.0, 0.2, 0.1]) * kk) for kk in k[:, 0]])
    rng = np.random.default_rng(5)
    tracks = {c: t + 0.5 * rng.normal(size=t.shape) for c, t in mt.project(rot, pos).items()}
    chunk = ActionChunk(state.t_ns, 0.1, mt.tracks_to_actions(tracks), "motion_tracks", np.linspace(1, 0, h))
    assert chunk.actions.shape == (h, mt.action_dim) == (h, 36)
    traj = decoder.decode(chunk, state)
    np.testing.assert_array_equal(traj.t_ns, chunk.step_times_ns() + 20 * MS)
    np.testing.assert_allclose(traj.gripper, np.linspace(1, 0, h), atol=1e-6)
    for i in range(h):
        fk = ik.fk(traj.positions[i])
        dt, dr = fk.distance_to(decoder.last_track.poses()[i])
        assert dt < 2e-4 and dr < np.deg2rad(0.1)  # IK hits the decoded pose
        assert np.linalg.norm(fk.translation - pos[i]) < 3e-3  # which is the ground truth within 3 mm
        assert np.rad2deg(rotation_angle(fk.rotation.T @ rot[i])) < 1.0
    assert np.abs(np.diff(traj.positions, axis=0)).max() < 0.3  # one IK branch, no joint flips
    assert decoder.stats()["chunks"] == 1
    with pytest.raises(DecodeError, match="action_space"):
        decoder.decode(ActionChunk(state.t_ns, 0.1, np.zeros((h, 3)), "ee_delta_xyz"), state)
