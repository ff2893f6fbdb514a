"""The depth form of an observation: what a robot sends instead of a base-frame XYZ map, and the reference maths.

A float32 XYZ map is 3.7 MB at 640x480; the aligned uint16 depth it comes from is 0.6 MB. A model that computes the
XYZ itself (inside its graph, on the server's device) receives per camera ``<camera>/depth`` (H, W) uint16 and
``<camera>/calib`` (:data:`CALIB_SIZE`,) float32 — the calibration the robot would have used, packed as:

====== ============================================================================================================
index  meaning
====== ============================================================================================================
0-3    ``fx, fy, cx, cy``: pinhole intrinsics of the depth image (pixels; pixel centres at integer coordinates)
4      ``depth_scale``: metres per depth unit
5-13   ``T_base_cam`` rotation, row-major (3, 3): maps optical-frame points (x right, y down, z forward) into the
       robot base frame
14-16  ``T_base_cam`` translation, metres
====== ============================================================================================================

Lens distortion is not carried: the in-graph projection is a pinhole model, so a camera with non-zero distortion
coefficients must send the XYZ form (:func:`calib_vector` refuses it). The calibration's *version*
(:func:`calibration_version`: a digest of the calibration file's content) travels in the request meta, so the server
can tell which calibration a request was computed with.

:func:`xyz_from_depth` is the reference of what such a graph computes (tests hold the graphs to it, and it to
:class:`~robot_stack.calibration.projection.DepthProjector`).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from robot_stack.errors import CalibrationError, ShapeError
from robot_stack.types import CameraModel, Pose

__all__ = ["CALIB_SIZE", "calib_vector", "calibration_version", "xyz_from_depth"]

#: Length of the packed calibration vector (see the module docstring).
CALIB_SIZE = 17


def calib_vector(camera: CameraModel, T_base_cam: Pose, depth_scale: float) -> np.ndarray:
    """(17,) float32 packed calibration of one depth stream (layout in the module docstring).

    Raises:
        CalibrationError: the camera has lens distortion (the in-graph projection is pinhole-only).
        ShapeError: ``depth_scale`` is not a positive number.
    """
    if np.any(camera.distortion != 0.0):
        raise CalibrationError(
            f"camera with distortion {camera.distortion.tolist()}: the depth form is pinhole-only; send the XYZ form "
            "(the robot-side projector undistorts) or rectify the depth stream"
        )
    if not (np.isfinite(depth_scale) and depth_scale > 0):
        raise ShapeError(f"depth_scale must be positive metres per unit, got {depth_scale}")
    return np.concatenate(
        [
            [camera.fx, camera.fy, camera.cx, camera.cy, depth_scale],
            T_base_cam.rotation.reshape(-1),
            T_base_cam.translation,
        ]
    ).astype(np.float32)


def calibration_version(document: dict[str, object]) -> str:
    """A short, stable digest (12 hex digits) of a calibration document (``CameraCalibration.to_dict()``): changes
    whenever any field of the file changes (a recalibration, a new ``created`` time)."""
    text = json.dumps(document, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def xyz_from_depth(
    depth: np.ndarray,
    calib: np.ndarray,
    stride: int = 1,
    offset: int = 0,
    max_range_m: float = 3.0,
    frame: str = "base",
) -> np.ndarray:
    """Reference projection of the depth form: XYZ at pixels ``(offset + stride * i, offset + stride * j)``.

    Args:
        depth: (H, W) uint16 depth units (0 = invalid).
        calib: (17,) packed calibration.
        stride, offset: the pixel grid the XYZ is wanted on (a model's subsampling).
        max_range_m: depths beyond this are invalid.
        frame: ``base`` (robot base frame) or ``camera`` (optical frame; the camera-frame ablation).
    Returns:
        (h, w, 3) float32 metres; NaN where the depth is invalid.
    """
    depth = np.asarray(depth)
    calib = np.asarray(calib, dtype=np.float64)
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise ShapeError(f"xyz_from_depth: expected (H, W) uint16 depth, got {depth.shape} {depth.dtype}")
    if calib.shape != (CALIB_SIZE,):
        raise ShapeError(f"xyz_from_depth: expected a ({CALIB_SIZE},) calibration vector, got {calib.shape}")
    if frame not in ("base", "camera"):
        raise ShapeError(f"xyz_from_depth: frame must be 'base' or 'camera', got {frame!r}")
    fx, fy, cx, cy, scale = calib[:5]
    sub = depth[offset::stride, offset::stride].astype(np.float64)
    v = offset + stride * np.arange(sub.shape[0], dtype=np.float64)
    u = offset + stride * np.arange(sub.shape[1], dtype=np.float64)
    z = sub * scale
    valid = (sub > 0) & (z <= max_range_m)
    x = (u[None, :] - cx) / fx * z
    y = (v[:, None] - cy) / fy * z
    pts = np.stack([x, y, z], axis=-1)
    if frame == "base":
        pts = pts @ calib[5:14].reshape(3, 3).T + calib[14:17]
    pts[~valid] = np.nan
    return pts.astype(np.float32)
