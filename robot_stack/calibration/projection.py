"""Depth image -> XYZ in the robot base frame (the 4D-VLA observation), and the inverse projection.

A :class:`DepthProjector` is built once per (camera intrinsics, extrinsics) pair. At construction it undistorts
the pixel grid (OpenCV Brown-Conrady model, numpy iterative inversion) and rotates every pixel's viewing ray
into the base frame, so that converting a depth image is just ``xyz = t + z * ray`` per pixel: a few
vectorised passes over memory, ~1 ms for 640x480 on one CPU core.

Depth convention (RealSense, MuJoCo, OpenCV): the depth value ``z`` of a pixel is the distance along the
optical axis (+z of the optical frame), *not* the Euclidean distance along the ray. The optical frame is
x right, y down, z forward; a pixel with integer coordinates ``(u, v)`` = (column, row) has its centre at
``(u, v)``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

from robot_stack.calibration.payload import calib_vector
from robot_stack.errors import ShapeError
from robot_stack.types import CameraModel, CameraObservation, Frame, Pose

__all__ = ["DepthProjector", "distort_normalized", "project_points", "undistort_normalized"]

log = logging.getLogger("robot_stack.calibration")

#: A workspace crop: ((x_min, y_min, z_min), (x_max, y_max, z_max)) in metres, robot base frame.
Box = tuple[Sequence[float], Sequence[float]]


# ------------------------------------------------------------------------------------ distortion model


def distort_normalized(x: np.ndarray, y: np.ndarray, distortion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply OpenCV ``(k1, k2, p1, p2, k3)`` distortion to undistorted normalised coordinates.

    Args:
        x, y: arrays of the same shape, float64, normalised image coordinates ``X/Z``, ``Y/Z`` (optical frame).
        distortion: (5,) coefficients.

    Returns:
        ``(x_d, y_d)``: distorted normalised coordinates, same shape, float64.
    """
    k1, k2, p1, p2, k3 = (float(c) for c in distortion)
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return xd, yd


def project_points(points_cam: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Pixels ``(N, 2)`` float64 (column, row) of points ``(N, 3)`` in the camera's optical frame, metres, through
    the pinhole + Brown-Conrady model (what ``cv2.projectPoints`` computes, vectorised in numpy). Points must lie
    in front of the camera (z > 0)."""
    p = np.asarray(points_cam, dtype=np.float64)
    xd, yd = distort_normalized(p[:, 0] / p[:, 2], p[:, 1] / p[:, 2], camera.distortion)
    return np.column_stack([camera.fx * xd + camera.cx, camera.fy * yd + camera.cy])


def _distortion_jacobian(
    x: np.ndarray, y: np.ndarray, distortion: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Partial derivatives ``d(x_d, y_d)/d(x, y)`` of :func:`distort_normalized`, and the radial factor."""
    k1, k2, p1, p2, k3 = (float(c) for c in distortion)
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    dradial = 2.0 * (k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2))  # 2 * d(radial)/d(r2)
    j11 = radial + x * x * dradial + 2.0 * p1 * y + 6.0 * p2 * x
    j12 = x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y
    j22 = radial + y * y * dradial + 6.0 * p1 * y + 2.0 * p2 * x
    return j11, j12, j12, j22, radial


def undistort_normalized(
    xd: np.ndarray, yd: np.ndarray, distortion: np.ndarray, tol: float = 1e-12, max_iter: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Invert :func:`distort_normalized` (vectorised Newton iteration on the 2x2 distortion map).

    Starts from the OpenCV fixed-point estimate (a few iterations) and refines with Newton steps using the
    analytic Jacobian, which converges to ~1e-15 where the distortion map is invertible.

    Args:
        xd, yd: distorted normalised coordinates, same shape, float64.
        distortion: (5,) OpenCV coefficients.
        tol: convergence threshold on the residual ``|distort(x, y) - (xd, yd)|`` (normalised units).
        max_iter: Newton iterations at most.

    Returns:
        ``(x, y, residual)``: undistorted coordinates and the final residual per point (float64, same shape).
        Points where the map is not invertible (beyond the lens' valid field) keep a large residual; callers
        should treat them as invalid.
    """
    k1, k2, p1, p2, k3 = (float(c) for c in distortion)
    xd = np.asarray(xd, dtype=np.float64)
    yd = np.asarray(yd, dtype=np.float64)
    x, y = xd.copy(), yd.copy()
    for _ in range(5):  # OpenCV's fixed-point start: x = (xd - tangential) / radial
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        dy = p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        with np.errstate(divide="ignore", invalid="ignore"):
            x_new, y_new = (xd - dx) / radial, (yd - dy) / radial
        ok = np.isfinite(x_new) & np.isfinite(y_new)
        x, y = np.where(ok, x_new, x), np.where(ok, y_new, y)
    shape = x.shape
    x, y, xd_f, yd_f = x.ravel(), y.ravel(), xd.ravel(), yd.ravel()
    active = np.arange(x.size)  # Newton steps only for points not yet converged
    for _ in range(max_iter):
        xa, ya = x[active], y[active]
        fx, fy = distort_normalized(xa, ya, distortion)
        ex, ey = fx - xd_f[active], fy - yd_f[active]
        unconverged = ~(np.hypot(ex, ey) <= tol)
        if not np.any(unconverged):
            break
        active, xa, ya, ex, ey = active[unconverged], xa[unconverged], ya[unconverged], ex[unconverged], ey[unconverged]
        j11, j12, j21, j22, _ = _distortion_jacobian(xa, ya, distortion)
        det = j11 * j22 - j12 * j21
        with np.errstate(divide="ignore", invalid="ignore"):
            step_x = (j22 * ex - j12 * ey) / det
            step_y = (-j21 * ex + j11 * ey) / det
        ok = np.isfinite(step_x) & np.isfinite(step_y)
        x[active] = np.where(ok, xa - step_x, xa)
        y[active] = np.where(ok, ya - step_y, ya)
    x, y = x.reshape(shape), y.reshape(shape)
    fx, fy = distort_normalized(x, y, distortion)
    residual = np.hypot(fx - xd, fy - yd)
    # Only the branch the lens actually images is a solution: past the fold of a strongly distorted lens the map
    # can be inverted again (radial factor <= 0, or the image flips: Jacobian determinant <= 0). Reject those.
    j11, j12, j21, j22, radial = _distortion_jacobian(x, y, distortion)
    physical = (radial > 0) & (j11 * j22 - j12 * j21 > 0)
    residual = np.where(physical, residual, np.inf)
    return x, y, residual


# --------------------------------------------------------------------------------------------- projector


class DepthProjector:
    """Converts aligned depth images of one camera into XYZ in the robot base frame.

    Args:
        camera: intrinsics of the stream the depth is aligned to (usually colour).
        T_base_cam: pose of the camera's *optical* frame in the robot base frame (``p_base = T_base_cam @ p``).
        max_range_m: depth values beyond this many metres are treated as invalid (NaN).
        version: digest of the calibration file this projector was made from (sent with depth-form observations,
            :func:`robot_stack.calibration.payload.calibration_version`); "" = unknown.

    Attributes:
        rays_base: (3, H, W) float32, read-only: per-pixel viewing direction in the base frame, scaled so that
            its optical-frame z component is 1 (``xyz_base = t + z * ray``). NaN for pixels outside the lens'
            invertible field (strong distortion only).

    ``to_xyz`` keeps per-thread scratch buffers, so one projector can be shared by several threads.
    """

    def __init__(self, camera: CameraModel, T_base_cam: Pose, max_range_m: float = 3.0, version: str = "") -> None:
        if not (np.isfinite(max_range_m) and max_range_m > 0):
            raise ShapeError(f"DepthProjector: max_range_m must be a positive number of metres, got {max_range_m}")
        self.camera = camera
        self.T_base_cam = T_base_cam
        self.max_range_m = float(max_range_m)
        h, w = camera.height, camera.width

        # Undistorted normalised coordinates of every pixel centre (optical frame, z = 1).
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        xn = (u - camera.cx) / camera.fx
        yn = (v - camera.cy) / camera.fy
        self.has_distortion = bool(np.any(camera.distortion != 0.0))
        if self.has_distortion:
            xn, yn, residual = undistort_normalized(xn, yn, camera.distortion)
            bad = ~(residual < 1e-9)
            if np.any(bad):
                log.warning(
                    "DepthProjector: %d of %d pixels lie outside the invertible field of the distortion model "
                    "%s; their XYZ will be NaN",
                    int(bad.sum()),
                    bad.size,
                    camera.distortion.tolist(),
                )
                xn[bad] = np.nan
                yn[bad] = np.nan
        rays_cam = np.stack([xn, yn, np.ones_like(xn)])  # (3, H, W), optical frame
        rays = np.einsum("ij,jhw->ihw", T_base_cam.rotation, rays_cam)
        self.rays_base: np.ndarray = np.ascontiguousarray(rays, dtype=np.float32)
        self.rays_base.setflags(write=False)
        self._t = T_base_cam.translation.astype(np.float32)
        # Inverse transform for project_points.
        self._R_cam_base = T_base_cam.rotation.T.copy()
        self._t_cam_base = -self._R_cam_base @ T_base_cam.translation
        self._local = threading.local()
        self._luts: dict[float, np.ndarray] = {}
        self._lut_lock = threading.Lock()
        self._calibs: dict[float, np.ndarray] = {}
        self.version = version

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the depth images this projector accepts."""
        return self.camera.height, self.camera.width

    def _check_depth(self, depth: np.ndarray, depth_scale: float) -> np.ndarray:
        depth = np.asarray(depth)
        if depth.dtype != np.uint16 or depth.shape != self.shape:
            raise ShapeError(
                f"DepthProjector: expected depth of shape {self.shape} (H, W) uint16 for a "
                f"{self.camera.width}x{self.camera.height} camera, got {depth.shape} {depth.dtype}. "
                "Align depth to the calibrated stream and pass raw device units with their depth_scale."
            )
        if not (np.isfinite(depth_scale) and depth_scale > 0):
            raise ShapeError(f"DepthProjector: depth_scale must be positive metres per unit, got {depth_scale}")
        return depth

    def _scratch(self) -> tuple[np.ndarray, np.ndarray]:
        bufs = getattr(self._local, "bufs", None)
        if bufs is None:
            h, w = self.shape
            bufs = (np.empty((h, w), np.float32), np.empty((h, w), np.float32))
            self._local.bufs = bufs
        return bufs

    def _depth_lut(self, depth_scale: float) -> np.ndarray:
        """(65536,) float32: metres of each uint16 depth value; NaN for 0 and beyond ``max_range_m``."""
        lut = self._luts.get(depth_scale)
        if lut is not None:
            return lut
        with self._lut_lock:
            metres = np.arange(65536, dtype=np.float64) * depth_scale
            lut = metres.astype(np.float32)
            lut[0] = np.nan
            lut[metres > self.max_range_m] = np.nan
            lut.setflags(write=False)
            if len(self._luts) >= 4:  # depth_scale is fixed per device; a few entries cover every stream
                self._luts.pop(next(iter(self._luts)))
            self._luts[depth_scale] = lut
            return lut

    # ------------------------------------------------------------------------------------- depth -> XYZ
    def to_xyz(self, depth: np.ndarray, depth_scale: float, out: np.ndarray | None = None) -> np.ndarray:
        """Convert one aligned depth image to XYZ in the base frame.

        Args:
            depth: (H, W) uint16 device units; 0 = no measurement.
            depth_scale: metres per device unit (RealSense D4xx: 0.001).
            out: optional (H, W, 3) float32 C-contiguous array to write into (no allocation); a fresh array
                is allocated when None. Reusing ``out`` is the caller's choice, because an observation handed
                to another thread must not be overwritten by the next frame.

        Returns:
            xyz_base: (H, W, 3) float32 metres, robot base frame; NaN where depth is 0 or beyond
            ``max_range_m`` (and where the lens model has no ray).
        """
        depth = self._check_depth(depth, depth_scale)
        h, w = self.shape
        if out is None:
            out = np.empty((h, w, 3), np.float32)
        elif out.shape != (h, w, 3) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ShapeError(
                f"DepthProjector.to_xyz: out must be a C-contiguous ({h}, {w}, 3) float32 array, "
                f"got {out.shape} {out.dtype}"
            )
        z, tmp = self._scratch()
        # One gather through a 64K-entry table maps device units to metres, with NaN for 0 and out-of-range
        # values (faster than multiply + compare + masked assignment); NaN z then propagates into x, y and z.
        np.take(self._depth_lut(depth_scale), depth, out=z, mode="clip")
        # xyz[..., c] = t[c] + z * ray[c]; planar multiply (contiguous) then one strided write per channel.
        for c in range(3):
            np.multiply(self.rays_base[c], z, out=tmp)
            np.add(tmp, self._t[c], out=out[..., c])
        return out

    def valid_mask(self, depth: np.ndarray, depth_scale: float) -> np.ndarray:
        """(H, W) bool: pixels whose depth gives a point (non-zero, within ``max_range_m``, ray defined)."""
        depth = self._check_depth(depth, depth_scale)
        return ~np.isnan(self._depth_lut(depth_scale)[depth]) & ~np.isnan(self.rays_base[0])

    def point_cloud(self, depth: np.ndarray, depth_scale: float, crop: Box | None = None) -> np.ndarray:
        """Valid points of one depth image, optionally cropped to a workspace box.

        Args:
            depth, depth_scale: as in :meth:`to_xyz`.
            crop: ``((x_min, y_min, z_min), (x_max, y_max, z_max))`` metres in the base frame (inclusive), or
                None for no crop.

        Returns:
            (N, 3) float32 metres, base frame, in row-major pixel order; no NaN.
        """
        points, _ = self._cloud(depth, depth_scale, crop)
        return points

    def point_cloud_colored(
        self, depth: np.ndarray, depth_scale: float, color: np.ndarray, crop: Box | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`point_cloud`, plus each point's colour.

        Args:
            color: (H, W, 3) uint8 RGB aligned with ``depth``.

        Returns:
            ``(points, colors)``: (N, 3) float32 metres (base frame) and (N, 3) uint8 RGB.
        """
        color = np.asarray(color)
        if color.dtype != np.uint8 or color.shape != (*self.shape, 3):
            raise ShapeError(
                f"point_cloud_colored: expected color {(*self.shape, 3)} uint8, got {color.shape} {color.dtype}"
            )
        points, keep = self._cloud(depth, depth_scale, crop)
        return points, color.reshape(-1, 3)[keep]

    def _cloud(self, depth: np.ndarray, depth_scale: float, crop: Box | None) -> tuple[np.ndarray, np.ndarray]:
        xyz = self.to_xyz(depth, depth_scale).reshape(-1, 3)
        keep = ~np.isnan(xyz[:, 0]) & ~np.isnan(xyz[:, 1]) & ~np.isnan(xyz[:, 2])
        if crop is not None:
            lo = np.asarray(crop[0], dtype=np.float32)
            hi = np.asarray(crop[1], dtype=np.float32)
            if lo.shape != (3,) or hi.shape != (3,) or np.any(lo > hi):
                raise ShapeError(
                    f"point_cloud: crop must be ((x_min, y_min, z_min), (x_max, y_max, z_max)) with min <= max, "
                    f"got {crop!r}"
                )
            keep &= np.all((xyz >= lo) & (xyz <= hi), axis=1)
        (idx,) = np.nonzero(keep)
        return xyz[idx], idx

    def calib_vector(self, depth_scale: float) -> np.ndarray | None:
        """(17,) float32 packed calibration for the depth form (:func:`robot_stack.calibration.payload.calib_vector`),
        or None for a camera with lens distortion (the depth form is pinhole-only)."""
        if self.has_distortion:
            return None
        cached = self._calibs.get(depth_scale)
        if cached is None:
            cached = calib_vector(self.camera, self.T_base_cam, depth_scale)
            cached.setflags(write=False)
            self._calibs[depth_scale] = cached
        return cached

    def observe(self, frame: Frame, out: np.ndarray | None = None, xyz: bool = True) -> CameraObservation:
        """Turn one aligned RGB-D frame into the policy's per-camera observation: RGB, base-frame XYZ (skipped when
        ``xyz`` is False) and the depth form (the frame's depth, :meth:`calib_vector`, :attr:`version`)."""
        points = self.to_xyz(frame.depth, frame.depth_scale, out=out) if xyz else None
        return CameraObservation(
            frame.camera_id,
            frame.color,
            points,
            frame.t_capture_ns,
            depth=frame.depth,
            calib=self.calib_vector(frame.depth_scale),
            calib_version=self.version,
        )

    # ---------------------------------------------------------------------------- pixels <-> base points
    def deproject_pixels(self, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Base-frame points of arbitrary (sub-)pixel coordinates at given optical-axis depths.

        Args:
            uv: (N, 2) float pixel coordinates (column u, row v), distorted image as captured.
            z: (N,) depth along the optical axis, metres.

        Returns:
            (N, 3) float64 metres, base frame; NaN for pixels outside the lens model's invertible field.
        """
        uv = np.asarray(uv, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        if uv.ndim != 2 or uv.shape[1] != 2 or z.shape != (uv.shape[0],):
            raise ShapeError(f"deproject_pixels: expected uv (N, 2) and z (N,), got {uv.shape} and {z.shape}")
        cam = self.camera
        xn = (uv[:, 0] - cam.cx) / cam.fx
        yn = (uv[:, 1] - cam.cy) / cam.fy
        if self.has_distortion:
            xn, yn, residual = undistort_normalized(xn, yn, cam.distortion)
            bad = ~(residual < 1e-9)
            xn[bad] = np.nan
            yn[bad] = np.nan
        p_cam = np.stack([xn * z, yn * z, z], axis=1)
        return self.T_base_cam.apply(p_cam)

    def project_points(self, xyz_base: np.ndarray) -> np.ndarray:
        """Project base-frame points into the (distorted) image.

        Args:
            xyz_base: (N, 3) or (..., 3) metres, robot base frame; NaN allowed.

        Returns:
            (N, 2) float64 pixel coordinates (u = column, v = row), flattened over leading axes; NaN for points
            at or behind the camera plane or NaN input. Points outside the image are returned as computed
            (compare against width/height to clip).
        """
        p = np.asarray(xyz_base, dtype=np.float64)
        if p.shape[-1] != 3:
            raise ShapeError(f"project_points: expected (..., 3) points, got {p.shape}")
        p = p.reshape(-1, 3)
        p_cam = p @ self._R_cam_base.T + self._t_cam_base
        zc = p_cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            zc = np.where(zc > 0, zc, np.nan)
            x = p_cam[:, 0] / zc
            y = p_cam[:, 1] / zc
        if self.has_distortion:
            x, y = distort_normalized(x, y, self.camera.distortion)
        cam = self.camera
        return np.stack([cam.fx * x + cam.cx, cam.fy * y + cam.cy], axis=1)
