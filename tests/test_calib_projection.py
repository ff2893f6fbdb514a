"""DepthProjector: geometry axioms (property tests), distortion model, validity masks, shapes, point clouds."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_stack.calibration.projection import DepthProjector, distort_normalized, undistort_normalized
from robot_stack.errors import ShapeError
from robot_stack.types import CameraModel, Frame, Pose

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _camera(width: int = 64, height: int = 48, distortion: np.ndarray | None = None) -> CameraModel:
    f = 0.9 * width
    dist = np.zeros(5) if distortion is None else distortion
    return CameraModel(width, height, f, f * 1.01, (width - 1) / 2 + 0.7, (height - 1) / 2 - 0.4, dist)


def _pose() -> Pose:
    return Pose.from_quat_xyz(np.array([0.26, -0.66, -0.66, 0.26]), np.array([1.15, 0.02, 0.95]), "base", "cam")


# ---------------------------------------------------------------------------------------------- strategies

unit = st.floats(-1.0, 1.0, allow_nan=False)


@st.composite
def poses(draw: st.DrawFn) -> Pose:
    q = np.array([draw(unit) for _ in range(4)])
    if np.linalg.norm(q) < 0.1:
        q = np.array([1.0, 0.0, 0.0, 0.0])
    t = np.array([draw(st.floats(-2.0, 2.0)) for _ in range(3)])
    return Pose.from_quat_xyz(q, t, "base", "cam")


@st.composite
def distortions(draw: st.DrawFn) -> np.ndarray:
    """Moderate lens distortion (a typical RGB-D colour stream is well inside these bounds)."""
    return np.array(
        [
            draw(st.floats(-0.3, 0.3)),
            draw(st.floats(-0.1, 0.1)),
            draw(st.floats(-0.005, 0.005)),
            draw(st.floats(-0.005, 0.005)),
            draw(st.floats(-0.05, 0.05)),
        ]
    )


@st.composite
def cameras(draw: st.DrawFn, distorted: bool = False) -> CameraModel:
    width = draw(st.integers(8, 48))
    height = draw(st.integers(6, 36))
    # Field of view up to ~39 deg across the larger side: with the distortion bounds above the lens model stays
    # invertible over the whole image, corners included (|normalised coordinate| <= 0.39 per axis, radius <= 0.55;
    # the worst barrel distortion drawn folds over at a distorted radius of ~0.61). At fx >= 1.0 x the larger side
    # (0.54 per axis, radius 0.76 at a corner) a drawn camera had a corner pixel outside that field, which the
    # projector rightly returns as NaN.
    fx = draw(st.floats(1.4, 2.0)) * max(width, height)
    fy = fx * draw(st.floats(0.98, 1.02))
    cx = (width - 1) / 2 + draw(st.floats(-0.04, 0.04)) * width
    cy = (height - 1) / 2 + draw(st.floats(-0.04, 0.04)) * height
    dist = draw(distortions()) if distorted else np.zeros(5)
    return CameraModel(width, height, fx, fy, cx, cy, dist)


# ------------------------------------------------------------------------------------------ property tests


@FAST
@given(cam=st.one_of(cameras(), cameras(distorted=True)), pose=poses(), seed=st.integers(0, 2**31 - 1))
def test_deproject_then_project_is_identity(cam: CameraModel, pose: Pose, seed: int) -> None:
    rng = np.random.default_rng(seed)
    proj = DepthProjector(cam, pose)
    uv = rng.uniform([0, 0], [cam.width - 1, cam.height - 1], size=(50, 2))
    z = rng.uniform(0.1, 3.0, size=50)
    xyz = proj.deproject_pixels(uv, z)
    np.testing.assert_allclose(proj.project_points(xyz), uv, atol=1e-6)
    # And the point really is at optical-axis depth z in the camera frame.
    np.testing.assert_allclose(pose.inverse().apply(xyz)[:, 2], z, atol=1e-9)


@FAST
@given(cam=cameras(), pose=poses(), seed=st.integers(0, 2**31 - 1))
def test_project_then_deproject_is_identity(cam: CameraModel, pose: Pose, seed: int) -> None:
    rng = np.random.default_rng(seed)
    proj = DepthProjector(cam, pose)
    # Points in front of the camera, expressed in the base frame.
    p_cam = rng.uniform([-1.0, -1.0, 0.2], [1.0, 1.0, 3.0], size=(40, 3))
    p_base = pose.apply(p_cam)
    uv = proj.project_points(p_base)
    np.testing.assert_allclose(proj.deproject_pixels(uv, p_cam[:, 2]), p_base, atol=1e-9)


@FAST
@given(cam=st.one_of(cameras(), cameras(distorted=True)), pose=poses(), seed=st.integers(0, 2**31 - 1))
def test_depth_image_round_trip(cam: CameraModel, pose: Pose, seed: int) -> None:
    """to_xyz of a whole image projects back onto the pixel grid, at the depth it was given."""
    rng = np.random.default_rng(seed)
    proj = DepthProjector(cam, pose, max_range_m=5.0)
    depth = rng.integers(100, 5000, size=(cam.height, cam.width), dtype=np.uint16)
    xyz = proj.to_xyz(depth, 0.001)
    assert xyz.shape == (cam.height, cam.width, 3) and xyz.dtype == np.float32
    assert np.all(np.isfinite(xyz))
    u, v = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    uv = proj.project_points(xyz)
    # float32 output: ~1e-7 relative error in metres, i.e. well below a thousandth of a pixel here.
    np.testing.assert_allclose(uv[:, 0], u.ravel(), atol=2e-3)
    np.testing.assert_allclose(uv[:, 1], v.ravel(), atol=2e-3)
    z_cam = pose.inverse().apply(xyz.reshape(-1, 3).astype(np.float64))[:, 2]
    np.testing.assert_allclose(z_cam, depth.ravel() * 0.001, atol=2e-6)


@FAST
@given(dist=distortions(), seed=st.integers(0, 2**31 - 1))
def test_undistort_inverts_distort(dist: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.7, 0.7, 200)
    y = rng.uniform(-0.55, 0.55, 200)
    xd, yd = distort_normalized(x, y, dist)
    xu, yu, residual = undistort_normalized(xd, yd, dist)
    np.testing.assert_allclose(xu, x, atol=1e-10)
    np.testing.assert_allclose(yu, y, atol=1e-10)
    assert residual.max() < 1e-9


# ------------------------------------------------------------------------------------------ distortion


def test_distortion_known_values() -> None:
    """Hand-computed OpenCV distortion: radial k1 and tangential p1/p2 terms."""
    xd, yd = distort_normalized(np.array([0.3]), np.array([0.0]), np.array([0.1, 0, 0, 0, 0]))
    assert xd[0] == pytest.approx(0.3 * (1 + 0.1 * 0.09)) and yd[0] == 0.0
    xd, yd = distort_normalized(np.array([0.2]), np.array([0.1]), np.array([0, 0, 0.01, 0.02, 0]))
    # x_d = x + 2 p1 x y + p2 (r^2 + 2 x^2); y_d = y + p1 (r^2 + 2 y^2) + 2 p2 x y, r^2 = 0.05
    assert xd[0] == pytest.approx(0.2 + 2 * 0.01 * 0.02 + 0.02 * (0.05 + 0.08))
    assert yd[0] == pytest.approx(0.1 + 0.01 * (0.05 + 0.02) + 2 * 0.02 * 0.02)


def test_distorted_projector_uses_the_lens_model() -> None:
    """A point on the optical-frame ray (0.3, 0, 1) lands on the *distorted* pixel, and back."""
    k1 = 0.1
    cam = CameraModel(640, 480, 600.0, 600.0, 320.0, 240.0, np.array([k1, 0, 0, 0, 0]))
    pose = Pose.identity("base", "cam")
    proj = DepthProjector(cam, pose)
    uv = proj.project_points(np.array([[0.6, 0.0, 2.0]]))
    u_expected = 600.0 * 0.3 * (1 + k1 * 0.09) + 320.0
    np.testing.assert_allclose(uv, [[u_expected, 240.0]], atol=1e-9)
    np.testing.assert_allclose(proj.deproject_pixels(uv, np.array([2.0])), [[0.6, 0.0, 2.0]], atol=1e-9)
    # The per-pixel rays are undistorted too: the pixel at u = round(u_expected) sees x/z close to 0.3.
    u_px = int(round(u_expected))
    depth = np.full((480, 640), 2000, np.uint16)
    xyz = proj.to_xyz(depth, 0.001)
    x_over_z = xyz[240, u_px, 0] / xyz[240, u_px, 2]
    expected = proj.deproject_pixels(np.array([[u_px, 240.0]]), np.array([1.0]))[0, 0]
    assert x_over_z == pytest.approx(expected, abs=1e-6)
    assert abs(x_over_z - 0.3) < 1.0 / 600.0  # within one pixel's angle of the analytic point


def test_non_invertible_distortion_gives_nan_rays_not_garbage(caplog: pytest.LogCaptureFixture) -> None:
    """A strongly barrel-distorted lens folds over near the corners: those pixels have no ray -> NaN."""
    cam = CameraModel(64, 48, 20.0, 20.0, 31.5, 23.5, np.array([-0.6, 0.0, 0.0, 0.0, 0.0]))
    with caplog.at_level("WARNING", logger="robot_stack.calibration"):
        proj = DepthProjector(cam, Pose.identity("base", "cam"))
    assert "invertible field" in caplog.text
    xyz = proj.to_xyz(np.full((48, 64), 1000, np.uint16), 0.001)
    corner_nan = np.isnan(xyz[0, 0]).all()
    assert corner_nan and np.isfinite(xyz[24, 32]).all()
    ok = ~np.isnan(xyz[..., 0])
    uv = proj.project_points(xyz[ok])
    u, v = np.meshgrid(np.arange(64), np.arange(48))
    np.testing.assert_allclose(uv, np.stack([u[ok], v[ok]], axis=1), atol=1e-3)


# ------------------------------------------------------------------------------------------ validity


def test_invalid_depth_is_nan_and_only_there() -> None:
    cam = _camera(40, 30)
    proj = DepthProjector(cam, _pose(), max_range_m=2.0)
    rng = np.random.default_rng(3)
    depth = rng.integers(1, 1900, size=(30, 40), dtype=np.uint16)
    depth[0:5, :] = 0  # no return
    depth[10, 3:9] = 2001  # 2.001 m > max range
    depth[11, 3] = 2000  # exactly at max range: valid
    depth[12, 0] = 65535
    xyz = proj.to_xyz(depth, 0.001)
    expected_invalid = (depth == 0) | (depth > 2000)
    assert np.array_equal(np.isnan(xyz).any(axis=2), expected_invalid)
    assert np.array_equal(np.isnan(xyz).all(axis=2), expected_invalid)  # all three coordinates, not just z
    assert np.array_equal(proj.valid_mask(depth, 0.001), ~expected_invalid)


def test_depth_scale_is_respected() -> None:
    """The same scene in 1 mm units and in 0.25 mm units (RealSense D405-style) gives the same points."""
    proj = DepthProjector(_camera(), _pose())
    rng = np.random.default_rng(0)
    metres = rng.uniform(0.3, 2.5, size=(48, 64))
    xyz_mm = proj.to_xyz(np.round(metres * 1000).astype(np.uint16), 0.001)
    xyz_qmm = proj.to_xyz(np.round(metres * 4000).astype(np.uint16), 0.00025)
    np.testing.assert_allclose(xyz_mm, xyz_qmm, atol=1.5e-3)  # both quantised: <= 0.5 mm + 0.125 mm along a ray


def test_out_buffer_is_written_in_place() -> None:
    proj = DepthProjector(_camera(), _pose())
    depth = np.full((48, 64), 1234, np.uint16)
    out = np.zeros((48, 64, 3), np.float32)
    result = proj.to_xyz(depth, 0.001, out=out)
    assert result is out
    np.testing.assert_array_equal(out, proj.to_xyz(depth, 0.001))


def test_concurrent_use_from_threads_gives_the_serial_result() -> None:
    proj = DepthProjector(_camera(), _pose())
    rng = np.random.default_rng(5)
    depths = [rng.integers(0, 3000, size=(48, 64), dtype=np.uint16) for _ in range(8)]
    serial = [proj.to_xyz(d, 0.001) for d in depths]
    results: dict[int, list[np.ndarray]] = {}

    def work(i: int) -> None:
        results[i] = [proj.to_xyz(d, 0.001) for _ in range(20) for d in depths][-len(depths) :]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results.values():
        for a, b in zip(got, serial, strict=True):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize(
    ("depth", "fragment"),
    [
        (np.zeros((48, 64), np.float32), "float32"),
        (np.zeros((64, 48), np.uint16), "(64, 48)"),
        (np.zeros((48, 64, 1), np.uint16), "(48, 64, 1)"),
        (np.zeros((24, 32), np.uint16), "(24, 32)"),
    ],
)
def test_wrong_depth_shape_or_dtype_is_a_shape_error(depth: np.ndarray, fragment: str) -> None:
    proj = DepthProjector(_camera(), _pose())
    with pytest.raises(ShapeError) as err:
        proj.to_xyz(depth, 0.001)
    message = str(err.value)
    assert fragment in message and "(48, 64)" in message and "uint16" in message


@pytest.mark.parametrize("scale", [0.0, -0.001, float("nan"), float("inf")])
def test_bad_depth_scale_is_rejected(scale: float) -> None:
    proj = DepthProjector(_camera(), _pose())
    with pytest.raises(ShapeError, match="depth_scale"):
        proj.to_xyz(np.zeros((48, 64), np.uint16), scale)


def test_bad_out_buffer_and_range_are_rejected() -> None:
    proj = DepthProjector(_camera(), _pose())
    with pytest.raises(ShapeError, match="out must be"):
        proj.to_xyz(np.zeros((48, 64), np.uint16), 0.001, out=np.zeros((48, 64, 3), np.float64))
    with pytest.raises(ShapeError, match="max_range_m"):
        DepthProjector(_camera(), _pose(), max_range_m=0.0)
    with pytest.raises(ShapeError, match=r"\(N, 3\)|\(\.\.\., 3\)"):
        proj.project_points(np.zeros((4, 2)))


# ------------------------------------------------------------------------------------------ clouds & frames


def test_point_cloud_keeps_valid_points_and_crops() -> None:
    cam = _camera(40, 30)
    proj = DepthProjector(cam, _pose(), max_range_m=3.0)
    rng = np.random.default_rng(7)
    depth = rng.integers(0, 3500, size=(30, 40), dtype=np.uint16)
    xyz = proj.to_xyz(depth, 0.001).reshape(-1, 3)
    valid = ~np.isnan(xyz[:, 0])
    cloud = proj.point_cloud(depth, 0.001)
    assert cloud.shape == (valid.sum(), 3) and cloud.dtype == np.float32
    np.testing.assert_array_equal(cloud, xyz[valid])

    lo, hi = np.array([0.5, -0.3, 0.0]), np.array([1.2, 0.3, 0.7])
    cropped = proj.point_cloud(depth, 0.001, crop=(lo, hi))
    inside = valid & np.all((xyz >= lo.astype(np.float32)) & (xyz <= hi.astype(np.float32)), axis=1)
    assert 0 < cropped.shape[0] < cloud.shape[0]
    np.testing.assert_array_equal(cropped, xyz[inside])

    color = rng.integers(0, 255, size=(30, 40, 3), dtype=np.uint8)
    pts, cols = proj.point_cloud_colored(depth, 0.001, color, crop=(lo, hi))
    np.testing.assert_array_equal(pts, cropped)
    np.testing.assert_array_equal(cols, color.reshape(-1, 3)[inside])

    with pytest.raises(ShapeError, match="crop"):
        proj.point_cloud(depth, 0.001, crop=(hi, lo))


def test_observe_builds_a_camera_observation() -> None:
    cam = _camera(40, 30)
    proj = DepthProjector(cam, _pose())
    depth = np.full((30, 40), 900, np.uint16)
    color = np.zeros((30, 40, 3), np.uint8)
    obs = proj.observe(Frame(color, depth, 0.001, t_capture_ns=123, camera_id="front"))
    assert obs.camera_id == "front" and obs.t_capture_ns == 123 and obs.rgb is color
    np.testing.assert_array_equal(obs.xyz_base, proj.to_xyz(depth, 0.001))


def test_rays_are_precomputed_and_read_only() -> None:
    proj = DepthProjector(_camera(), _pose())
    assert proj.rays_base.shape == (3, 48, 64) and proj.rays_base.dtype == np.float32
    with pytest.raises(ValueError):
        proj.rays_base[0, 0, 0] = 1.0
