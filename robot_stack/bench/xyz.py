"""``robot-stack bench xyz``: depth -> base-frame XYZ for one 640x480 frame (target <= 3 ms).

The depth image is synthetic but shaped like a RealSense frame of a table-top: a camera 1 m from the workspace
looking down at ~40 deg sees a table plane (tilted in the image), three boxes, the floor beyond the table edge
(partly past the 3 m range), depth noise growing with z^2, random dropouts and a shadow band of zeros.

Figures, all measured in this run on the same frame:

* ``p50_ms`` ... : :meth:`DepthProjector.to_xyz` allocating its output (what a caller gets by default);
  ``reuse_out_*``: the same writing into a caller-owned buffer.
* ``numpy_recompute_*``: typical user code, vectorised numpy that rebuilds the pixel grid and rays every call
  (float64, ``@ R.T + t``, masked NaN assignment).
* ``naive_loop_*``: a per-pixel Python loop, timed on a subset of rows and scaled to the full frame
  (``naive_loop_rows_timed`` says how many rows).
* ``rs_pointcloud_*``: the RealSense SDK's ``rs.pointcloud().calculate`` on a real ``rs.depth_frame`` (from an
  ``rs.software_device``) + numpy rigid transform into the base frame (what realsense users write).
* ``open3d_*``: Open3D ``PointCloud.create_from_depth_image`` with the base-to-camera extrinsic.
* ``speedup_vs_naive_loop`` / ``speedup_vs_numpy_recompute`` / ``speedup_vs_rs_pointcloud`` /
  ``speedup_vs_open3d``: baseline p50 / projector p50.
* ``max_abs_diff_vs_numpy_m`` / ``max_abs_diff_vs_naive_m``: the implementations agree (metres).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from robot_stack.bench.registry import register
from robot_stack.calibration.projection import DepthProjector
from robot_stack.metrics import latency_stats, time_calls
from robot_stack.types import CameraModel, Pose

WIDTH, HEIGHT = 640, 480
DEPTH_SCALE = 0.001  # metres per unit (RealSense D4xx)
MAX_RANGE_M = 3.0
TARGET_MS = 3.0


def bench_camera() -> tuple[CameraModel, Pose]:
    """A D435-like colour camera (640x480, fx = fy = 615 px) 1 m from the table, looking down at ~40 deg."""
    camera = CameraModel(WIDTH, HEIGHT, 615.0, 615.0, 319.5, 239.5)
    pos = np.array([1.05, 0.05, 0.75])
    target = np.array([0.40, 0.0, 0.0])
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return camera, Pose(np.column_stack([right, down, forward]), pos, "base", "bench_cam")


def synthetic_depth(camera: CameraModel, T_base_cam: Pose, seed: int = 0) -> np.ndarray:
    """(H, W) uint16 millimetres of a table-top scene seen by ``camera`` at ``T_base_cam`` (see module doc)."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.arange(camera.width, dtype=np.float64), np.arange(camera.height, dtype=np.float64))
    rays_cam = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], axis=-1)
    rays = rays_cam @ T_base_cam.rotation.T  # base frame, optical z component = 1
    origin = T_base_cam.translation
    z_hit = np.full(u.shape, np.inf)

    def hit_plane(height: float, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (height - origin[2]) / rays[..., 2]
        p = origin + s[..., None] * rays
        ok = (s > 0) & (p[..., 0] >= x_range[0]) & (p[..., 0] <= x_range[1])
        ok &= (p[..., 1] >= y_range[0]) & (p[..., 1] <= y_range[1])
        np.minimum(z_hit, np.where(ok, s, np.inf), out=z_hit)

    hit_plane(0.0, (-0.3, 0.85), (-0.6, 0.6))  # table top
    hit_plane(-0.75, (-5.0, 5.0), (-5.0, 5.0))  # floor, beyond the table's far/side edges
    for lo, hi in (
        ((0.35, -0.15, 0.0), (0.45, -0.05, 0.12)),
        ((0.50, 0.05, 0.0), (0.58, 0.15, 0.06)),
        ((0.25, 0.10, 0.0), (0.31, 0.16, 0.20)),
    ):
        lo_a, hi_a = np.asarray(lo), np.asarray(hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (lo_a - origin) / rays
            t2 = (hi_a - origin) / rays
        t_near = np.max(np.minimum(t1, t2), axis=-1)
        t_far = np.min(np.maximum(t1, t2), axis=-1)
        ok = (t_near <= t_far) & (t_near > 0)
        np.minimum(z_hit, np.where(ok, t_near, np.inf), out=z_hit)

    z = z_hit + rng.normal(0.0, 1.0, z_hit.shape) * 0.0008 * z_hit**2  # ~0.8 mm at 1 m, like a D435 up close
    mm = np.where(np.isfinite(z), np.round(z / DEPTH_SCALE), 0.0)
    depth = np.clip(mm, 0, 65535).astype(np.uint16)
    depth[rng.random(depth.shape) < 0.03] = 0  # speckle dropouts
    depth[:, 200:206] = 0  # IR shadow band next to a box edge
    return depth


def numpy_recompute(
    depth: np.ndarray, depth_scale: float, camera: CameraModel, T_base_cam: Pose, max_range_m: float
) -> np.ndarray:
    """Baseline: the vectorised numpy most users write, rebuilding the pixel grid every call."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    z = depth.astype(np.float64) * depth_scale
    x = (u - camera.cx) * z / camera.fx
    y = (v - camera.cy) * z / camera.fy
    points = np.stack([x, y, z], axis=-1) @ T_base_cam.rotation.T + T_base_cam.translation
    points[(z == 0) | (z > max_range_m)] = np.nan
    return points.astype(np.float32)


def naive_loop(
    depth: np.ndarray, depth_scale: float, camera: CameraModel, T_base_cam: Pose, max_range_m: float, rows: int
) -> np.ndarray:
    """Baseline: a per-pixel Python loop over the first ``rows`` rows; returns (rows, W, 3) float32."""
    r = T_base_cam.rotation.tolist()
    t = T_base_cam.translation.tolist()
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    nan = float("nan")
    out = np.empty((rows, depth.shape[1], 3), np.float32)
    values = depth[:rows].tolist()
    for vi in range(rows):
        row = values[vi]
        for ui in range(len(row)):
            z = row[ui] * depth_scale
            if row[ui] == 0 or z > max_range_m:
                out[vi, ui] = (nan, nan, nan)
                continue
            x = (ui - cx) * z / fx
            y = (vi - cy) * z / fy
            out[vi, ui] = (
                r[0][0] * x + r[0][1] * y + r[0][2] * z + t[0],
                r[1][0] * x + r[1][1] * y + r[1][2] * z + t[1],
                r[2][0] * x + r[2][1] * y + r[2][2] * z + t[2],
            )
    return out


def rs_pointcloud_baseline(
    depth: np.ndarray, depth_scale: float, camera: CameraModel, T_base_cam: Pose
) -> tuple[Any, Any]:
    """A real ``rs.depth_frame`` of ``depth`` (software device) and ``fn() -> (H*W, 3) float32 base-frame XYZ``.

    The returned device must be kept alive while ``fn`` is used.
    """
    import pyrealsense2 as rs

    from robot_stack.cameras.software_device import SoftwareRealSense

    device = SoftwareRealSense(camera, depth_scale=depth_scale)
    syncer = device.start()
    color = np.zeros((camera.height, camera.width, 3), np.uint8)
    depth_frame = None
    for _ in range(5):  # the SDK's matcher holds back the first frames
        device.push(color, depth)
        ok, frames = syncer.try_wait_for_frames(1000)
        if ok and frames.as_frameset().get_depth_frame():
            depth_frame = frames.as_frameset().get_depth_frame()
            break
    if depth_frame is None:
        device.close()
        raise RuntimeError("software device delivered no depth frame")
    pc = rs.pointcloud()
    rotation_t = T_base_cam.rotation.T.astype(np.float32)
    translation = T_base_cam.translation.astype(np.float32)

    def fn() -> np.ndarray:
        points = pc.calculate(depth_frame)
        xyz = np.asanyarray(points.get_vertices()).view(np.float32).reshape(-1, 3)
        return xyz @ rotation_t + translation

    return device, fn


def open3d_baseline(depth: np.ndarray, depth_scale: float, camera: CameraModel, T_base_cam: Pose, max_range_m: float):  # noqa: ANN201
    """``fn() -> (N, 3) float64`` valid base-frame points via Open3D ``create_from_depth_image``."""
    import open3d as o3d

    intrinsic = o3d.camera.PinholeCameraIntrinsic(
        camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy
    )
    extrinsic = T_base_cam.inverse().matrix  # Open3D takes world(base) -> camera
    image = o3d.geometry.Image(np.ascontiguousarray(depth))

    def fn() -> np.ndarray:
        pcd = o3d.geometry.PointCloud.create_from_depth_image(
            image, intrinsic, extrinsic, depth_scale=1.0 / depth_scale, depth_trunc=max_range_m
        )
        return np.asarray(pcd.points)

    return fn


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    ok = ~np.isnan(a)
    return float(np.max(np.abs(a[ok].astype(np.float64) - b[ok]))) if ok.any() else 0.0


@register("xyz")
def run(quick: bool) -> dict[str, Any]:
    """Time depth -> base XYZ at 640x480 against a per-pixel loop and a recompute-every-call numpy version."""
    camera, T_base_cam = bench_camera()
    depth = synthetic_depth(camera, T_base_cam)
    repeats, baseline_repeats, loop_rows, loop_repeats = (60, 10, 12, 1) if quick else (400, 40, 48, 3)

    t0 = time.perf_counter()
    projector = DepthProjector(camera, T_base_cam, max_range_m=MAX_RANGE_M)
    init_ms = (time.perf_counter() - t0) * 1e3
    distorted = CameraModel(WIDTH, HEIGHT, 615.0, 615.0, 319.5, 239.5, np.array([0.08, -0.15, 0.0005, -0.0007, 0.05]))
    t0 = time.perf_counter()
    DepthProjector(distorted, T_base_cam, max_range_m=MAX_RANGE_M)
    init_distorted_ms = (time.perf_counter() - t0) * 1e3

    fresh = time_calls(lambda: projector.to_xyz(depth, DEPTH_SCALE), repeats)
    out = np.empty((HEIGHT, WIDTH, 3), np.float32)
    reused = time_calls(lambda: projector.to_xyz(depth, DEPTH_SCALE, out=out), repeats)
    recompute = time_calls(
        lambda: numpy_recompute(depth, DEPTH_SCALE, camera, T_base_cam, MAX_RANGE_M), baseline_repeats, warmup=1
    )
    loop = time_calls(
        lambda: naive_loop(depth, DEPTH_SCALE, camera, T_base_cam, MAX_RANGE_M, loop_rows), loop_repeats, warmup=0
    )
    loop_full_frame = loop * (HEIGHT / loop_rows)

    xyz = projector.to_xyz(depth, DEPTH_SCALE)
    extra: dict[str, Any] = {}
    try:
        device, rs_fn = rs_pointcloud_baseline(depth, DEPTH_SCALE, camera, T_base_cam)
        try:
            rs_stats = latency_stats(time_calls(rs_fn, baseline_repeats, warmup=2), "rs_pointcloud_")
            rs_xyz = rs_fn().reshape(HEIGHT, WIDTH, 3)
        finally:
            device.close()
        valid = ~np.isnan(xyz[..., 0])
        extra.update(rs_stats)
        extra["rs_pointcloud_max_abs_diff_m"] = float(np.max(np.abs(rs_xyz[valid] - xyz[valid])))
    except Exception as exc:  # noqa: BLE001 - an optional baseline must not hide the benchmark
        extra["rs_pointcloud_error"] = f"{type(exc).__name__}: {exc}"
    try:
        o3d_fn = open3d_baseline(depth, DEPTH_SCALE, camera, T_base_cam, MAX_RANGE_M)
        extra.update(latency_stats(time_calls(o3d_fn, baseline_repeats, warmup=2), "open3d_"))
        extra["open3d_points"] = int(len(o3d_fn()))
    except Exception as exc:  # noqa: BLE001
        extra["open3d_error"] = f"{type(exc).__name__}: {exc}"
    stats = latency_stats(fresh)
    recompute_stats = latency_stats(recompute, "numpy_recompute_")
    loop_stats = latency_stats(loop_full_frame, "naive_loop_")
    return {
        "frame": f"{WIDTH}x{HEIGHT} uint16 depth, scale {DEPTH_SCALE} m",
        "valid_fraction": round(float(np.mean(~np.isnan(xyz[..., 0]))), 4),
        **stats,
        **latency_stats(reused, "reuse_out_"),
        "target_ms": TARGET_MS,
        "meets_target": bool(stats["p99_ms"] <= TARGET_MS),
        "init_ms": round(init_ms, 2),
        "init_with_distortion_ms": round(init_distorted_ms, 2),
        **recompute_stats,
        **loop_stats,
        "naive_loop_rows_timed": loop_rows,
        "naive_loop_note": (
            f"per-pixel Python loop timed on {loop_rows} of {HEIGHT} rows x {loop_repeats} run(s), "
            f"scaled x{HEIGHT / loop_rows:g} to a full frame"
        ),
        "speedup_vs_naive_loop": round(loop_stats["naive_loop_p50_ms"] / stats["p50_ms"], 1),
        "speedup_vs_numpy_recompute": round(recompute_stats["numpy_recompute_p50_ms"] / stats["p50_ms"], 2),
        **extra,
        **{
            f"speedup_vs_{k}": round(extra[f"{k}_p50_ms"] / stats["p50_ms"], 2)
            for k in ("rs_pointcloud", "open3d")
            if f"{k}_p50_ms" in extra
        },
        "max_abs_diff_vs_numpy_m": _max_abs_diff(
            xyz, numpy_recompute(depth, DEPTH_SCALE, camera, T_base_cam, MAX_RANGE_M)
        ),
        "max_abs_diff_vs_naive_m": _max_abs_diff(
            xyz[:loop_rows], naive_loop(depth, DEPTH_SCALE, camera, T_base_cam, MAX_RANGE_M, loop_rows)
        ),
    }
