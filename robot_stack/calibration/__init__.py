"""Calibration: depth -> XYZ in the robot base frame, and per-scene camera calibration files.

Public API (imported lazily, so ``import robot_stack.calibration`` does not pull in MuJoCo or YAML parsing):

* :class:`~robot_stack.calibration.projection.DepthProjector` — (H, W) uint16 depth -> (H, W, 3) float32 XYZ.
* :class:`~robot_stack.calibration.store.CameraCalibration`, :func:`~robot_stack.calibration.store.load_calibration`,
  :func:`~robot_stack.calibration.store.save_calibration`, :func:`~robot_stack.calibration.store.list_calibrations`,
  :func:`~robot_stack.calibration.mujoco_truth.calibration_from_mujoco`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DepthProjector": "projection",
    "distort_normalized": "projection",
    "undistort_normalized": "projection",
    "CalibrationRef": "store",
    "CameraCalibration": "store",
    "calibration_from_mujoco": "mujoco_truth",
    "calibration_path": "store",
    "default_root": "store",
    "list_calibrations": "store",
    "load_calibration": "store",
    "save_calibration": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'robot_stack.calibration' has no attribute {name!r}")
    return getattr(importlib.import_module(f"robot_stack.calibration.{module}"), name)
