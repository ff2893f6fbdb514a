"""Ground-truth camera calibration read from a MuJoCo model (the simulator's "factory calibration").

MuJoCo cameras look along their local -z with +y up; robot-stack (like OpenCV and RealSense) uses the optical
frame: +x right, +y down, +z forward. ``T_world_cam`` returned here is in the optical convention.
"""

from __future__ import annotations

from datetime import datetime

import mujoco
import numpy as np

from robot_stack.calibration.store import SIM_VALID_DAYS, CameraCalibration, _utc_now
from robot_stack.errors import CalibrationError
from robot_stack.types import CameraModel, Pose

#: Rotation from the optical frame (x right, y down, z forward) to MuJoCo's camera frame (x right, y up, -z fwd).
R_MJCAM_OPTICAL = np.diag([1.0, -1.0, -1.0])


def _camera_id(model: mujoco.MjModel, camera: str) -> int:
    cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cam_id < 0:
        raise CalibrationError(f"MuJoCo model has no camera named {camera!r}")
    return cam_id


def camera_model_from_mujoco(model: mujoco.MjModel, camera: str, width: int, height: int) -> CameraModel:
    """Pinhole intrinsics of MuJoCo camera ``camera`` rendered at ``width`` x ``height`` pixels."""
    return CameraModel.from_fovy(width, height, float(model.cam_fovy[_camera_id(model, camera)]))


def camera_pose_from_mujoco(model: mujoco.MjModel, data: mujoco.MjData, camera: str) -> Pose:
    """``T_world_cam`` (optical convention) of MuJoCo camera ``camera``; ``data`` must have kinematics computed."""
    cam_id = _camera_id(model, camera)
    r_world_mjcam = data.cam_xmat[cam_id].reshape(3, 3)
    return Pose(r_world_mjcam @ R_MJCAM_OPTICAL, data.cam_xpos[cam_id].copy(), "world", camera)


def calibration_from_mujoco(
    model: mujoco.MjModel,
    data: mujoco.MjData,
    camera: str,
    width: int,
    height: int,
    scene: str,
    *,
    camera_id: str | None = None,
    robot: str = "panda",
    T_world_base: Pose | None = None,
    camera_serial: str | None = None,
    valid_days: float = SIM_VALID_DAYS,
    created: datetime | None = None,
) -> CameraCalibration:
    """Ground-truth calibration of MuJoCo camera ``camera`` (method ``"sim_ground_truth"``).

    ``T_base_cam = T_world_base^-1 @ T_world_cam``, with ``T_world_cam`` in the optical convention from
    :mod:`robot_stack.calibration.mujoco_truth`.

    Args:
        model, data: the simulation; ``data`` must have kinematics computed (``mujoco.mj_forward``).
        camera: MuJoCo camera name.
        width, height: rendered image size in pixels.
        scene: calibration scene name.
        camera_id: logical camera name (default: ``camera``).
        robot: robot model name recorded in the file.
        T_world_base: pose of the robot base in the MuJoCo world (default identity, frames ``"world"``/``"base"``).
        camera_serial: recorded device serial (default ``"sim:<camera>"``).
        valid_days: validity period.
        created: creation time (default now, UTC).
    """
    cam_index = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cam_index >= 0 and not np.any(data.cam_xmat[cam_index]):
        raise CalibrationError(
            f"MuJoCo data has no kinematics for camera {camera!r} (cam_xmat is zero); call mujoco.mj_forward(model, "
            "data) before reading the ground-truth calibration"
        )
    intrinsics = camera_model_from_mujoco(model, camera, width, height)
    T_world_cam = camera_pose_from_mujoco(model, data, camera)
    if T_world_base is None:
        T_world_base = Pose.identity("world", "base")
    if T_world_base.parent != T_world_cam.parent:
        raise CalibrationError(
            f"T_world_base maps into frame {T_world_base.parent!r} but the MuJoCo camera pose is in "
            f"{T_world_cam.parent!r}; pass T_world_base with parent frame {T_world_cam.parent!r}"
        )
    T_base_cam = T_world_base.inverse() @ T_world_cam
    return CameraCalibration(
        scene=scene,
        camera_id=camera_id or camera,
        camera_serial=camera_serial or f"sim:{camera}",
        robot=robot,
        camera=intrinsics,
        T_base_cam=T_base_cam,
        method="sim_ground_truth",
        created=created if created is not None else _utc_now(),
        valid_days=valid_days,
        residuals={},
    )
