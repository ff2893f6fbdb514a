"""Ground-truth camera calibration read from a MuJoCo model (the simulator's "factory calibration").

MuJoCo cameras look along their local -z with +y up; robot-stack (like OpenCV and RealSense) uses the optical
frame: +x right, +y down, +z forward. ``T_world_cam`` returned here is in the optical convention.
"""

from __future__ import annotations

import mujoco
import numpy as np

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
