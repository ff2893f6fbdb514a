"""SimCamera: renders the cell, the cube is visible, depth is metric and consistent with the ground-truth pose."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from robot_stack.clock import FakeClock
from robot_stack.errors import CameraError
from robot_stack.sim import DEPTH_SCALE, SimCamera, SimWorld, select_gl_backend
from robot_stack.types import CameraModel, Pose

MS = 1_000_000


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(start_ns=5_000 * MS)


@pytest.fixture(scope="module")
def world(clock: FakeClock) -> SimWorld:
    w = SimWorld(clock)
    w.reset(seed=3)
    return w


@pytest.fixture(scope="module")
def camera(world: SimWorld) -> Iterator[SimCamera]:
    cam = SimCamera(world, "front")
    cam.start()
    yield cam
    cam.stop()


def red_mask(color: np.ndarray) -> np.ndarray:
    c = color.astype(np.int16)
    return (c[..., 0] > 100) & (c[..., 0] > 3 * c[..., 1]) & (c[..., 0] > 3 * c[..., 2])


def project(model: CameraModel, T_cam_world: Pose, points: np.ndarray) -> np.ndarray:
    """(N, 3) world points -> (N, 2) pixel coordinates (u, v), pixel centres at integers."""
    pc = T_cam_world.apply(points)
    return np.stack([model.fx * pc[:, 0] / pc[:, 2] + model.cx, model.fy * pc[:, 1] / pc[:, 2] + model.cy], axis=1)


def back_project(model: CameraModel, T_world_cam: Pose, uv: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
    x = (uv[:, 0] - model.cx) / model.fx * depth_m
    y = (uv[:, 1] - model.cy) / model.fy * depth_m
    return T_world_cam.apply(np.stack([x, y, depth_m], axis=1))


def test_backend_is_headless() -> None:
    assert select_gl_backend() in ("egl", "osmesa")


def test_frame_format_and_timestamp(camera: SimCamera, world: SimWorld, clock: FakeClock) -> None:
    clock.advance(33 * MS)
    frame = camera.read()
    assert frame.color.shape == (480, 640, 3) and frame.color.dtype == np.uint8
    assert frame.depth.shape == (480, 640) and frame.depth.dtype == np.uint16
    assert frame.depth_scale == DEPTH_SCALE
    assert frame.t_capture_ns == clock.now_ns() == world.synced_ns
    assert frame.camera_id == "front"
    clock.advance(33 * MS)
    assert camera.read().seq == frame.seq + 1
    expected = CameraModel.from_fovy(640, 480, float(world.model.cam_fovy[0]))
    np.testing.assert_allclose(camera.model.K, expected.K)
    assert (camera.model.width, camera.model.height) == (640, 480)
    assert frame.color.std() > 10  # not a blank image


def test_red_cube_is_visible_where_it_should_be(camera: SimCamera, world: SimWorld) -> None:
    frame = camera.read()
    mask = red_mask(frame.color)
    assert mask.sum() > 150, f"only {mask.sum()} red pixels"
    vs, us = np.nonzero(mask)
    expected = project(camera.model, camera.ground_truth_pose().inverse(), world.cube_pose().translation[None])[0]
    assert np.hypot(us.mean() - expected[0], vs.mean() - expected[1]) < 10
    # moving the cube moves the red blob; nothing else in the scene is red
    world.set_cube_pose(np.array([0.6, 0.15, 0.025]), yaw=0.3)
    moved = red_mask(camera.read().color)
    vs2, us2 = np.nonzero(moved)
    assert us2.mean() > us.mean() + 20  # +y is image-right for the front camera
    world.reset(seed=3)


def test_table_depth_back_projects_onto_table_plane(camera: SimCamera, world: SimWorld) -> None:
    frame = camera.read()
    T_world_cam = camera.ground_truth_pose()
    assert (T_world_cam.parent, T_world_cam.child) == ("world", "front")
    cube_xy = world.cube_pose().translation[:2]
    xs, ys = np.meshgrid(np.linspace(0.4, 0.9, 12), np.linspace(-0.45, 0.45, 12))
    table_points = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], axis=1)
    table_points = table_points[np.linalg.norm(table_points[:, :2] - cube_xy, axis=1) > 0.1]
    uv = np.rint(project(camera.model, T_world_cam.inverse(), table_points))
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 640) & (uv[:, 1] >= 0) & (uv[:, 1] < 480)
    uv = uv[inside]
    assert len(uv) > 80
    depth_units = frame.depth[uv[:, 1].astype(int), uv[:, 0].astype(int)]
    assert np.all(depth_units > 0), "depth must be valid on the table"
    xyz = back_project(camera.model, T_world_cam, uv, depth_units * frame.depth_scale)
    err_mm = np.abs(xyz[:, 2]) * 1000
    # mm quantisation (<= 0.5 mm) plus a ~0.6 mm systematic offset of MuJoCo's rasteriser (see the sim notes)
    assert np.median(err_mm) < 1.0, f"table z error median {np.median(err_mm):.2f} mm"
    assert err_mm.max() < 1.5, f"table z error up to {err_mm.max():.2f} mm"
    # and the cube top is 5 cm above it
    top = world.cube_top_center()
    uv_top = np.rint(project(camera.model, T_world_cam.inverse(), top[None]))
    d = frame.depth[int(uv_top[0, 1]), int(uv_top[0, 0])] * frame.depth_scale
    np.testing.assert_allclose(back_project(camera.model, T_world_cam, uv_top, np.array([d]))[0], top, atol=0.003)


def test_depth_beyond_range_is_invalid(camera: SimCamera, world: SimWorld) -> None:
    full = camera.read().depth
    near = SimCamera(world, "front", max_depth_m=1.0)
    with near:
        short = near.read().depth
    assert np.all(short[full >= 1000] == 0)
    np.testing.assert_array_equal(short[(full > 0) & (full < 999)], full[(full > 0) & (full < 999)])
    assert (short > 0).sum() > 1000


def test_reads_from_another_thread(camera: SimCamera) -> None:
    frames = []
    thread = threading.Thread(target=lambda: frames.append(camera.read()))
    thread.start()
    thread.join(timeout=30)
    assert frames and frames[0].color.std() > 10
    assert camera.read().color.std() > 10  # the context was released by the other thread


def test_unknown_camera_and_unstarted_read(world: SimWorld) -> None:
    with pytest.raises(CameraError, match="no camera"):
        SimCamera(world, "nope")
    with pytest.raises(CameraError, match="not started"):
        SimCamera(world).read()
