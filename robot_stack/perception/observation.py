"""The 4D-VLA observation builder: per-camera RGB + base-frame XYZ, workspace crop, voxel grid, fused cloud.

Each camera's frame is converted with a :class:`~robot_stack.calibration.projection.DepthProjector` built from its
scene calibration (loaded by name: a missing or stale file is a :class:`~robot_stack.errors.CalibrationError`,
never an identity transform). Optionally:

* ``crop``: XYZ outside the workspace box becomes NaN (the map keeps its (H, W, 3) shape);
* the fused cloud of all cameras (:meth:`ObservationBuilder.fused_cloud`), cropped and voxel-downsampled;
* memory-bank history (:mod:`robot_stack.perception.memory_bank`): history frames are appended to
  ``Observation.cameras`` as ``CameraObservation`` s named ``"<camera_id>@h<i>"`` (``i = 1`` oldest), so
  ``Observation.arrays()`` exposes them as ``"<camera_id>@h<i>/rgb"`` and ``".../xyz"``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from robot_stack.calibration.projection import Box, DepthProjector
from robot_stack.calibration.store import CameraCalibration, load_calibration
from robot_stack.errors import CalibrationError, ConfigError, ShapeError
from robot_stack.perception.memory_bank import MemoryBank, MemoryBankConfig
from robot_stack.types import CameraObservation, Frame, Observation, RobotState

__all__ = ["ObservationBuilder", "ObservationConfig", "voxel_downsample"]

log = logging.getLogger("robot_stack.perception")


@dataclass(frozen=True)
class ObservationConfig:
    """Attributes:
    crop: workspace box ``((x_min, y_min, z_min), (x_max, y_max, z_max))`` metres, base frame; None = no crop.
    voxel_m: voxel edge of the fused cloud, metres; None = no downsampling.
    max_range_m: depth beyond this is invalid (NaN).
    memory_bank: history sampling per camera; None = current frame only.
    """

    crop: Box | None = None
    voxel_m: float | None = None
    max_range_m: float = 3.0
    memory_bank: MemoryBankConfig | None = None

    def __post_init__(self) -> None:
        if self.voxel_m is not None and not self.voxel_m > 0:
            raise ConfigError(f"ObservationConfig.voxel_m must be a positive number of metres, got {self.voxel_m}")
        if self.crop is not None and not np.all(np.asarray(self.crop[0]) <= np.asarray(self.crop[1])):
            raise ConfigError(f"ObservationConfig.crop: min corner must be <= max corner, got {self.crop}")


def voxel_downsample(
    points: np.ndarray, colors: np.ndarray | None, voxel_m: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Average points (and colours) per voxel with Open3D. ``points``: (N, 3) float -> (M, 3) float32."""
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    if colors is not None:
        pcd.colors = o3d.utility.Vector3dVector(np.asarray(colors, dtype=np.float64) / 255.0)
    down = pcd.voxel_down_sample(voxel_m)
    pts = np.asarray(down.points, dtype=np.float32)
    cols = (np.asarray(down.colors) * 255.0 + 0.5).astype(np.uint8) if colors is not None else None
    return pts, cols


class ObservationBuilder:
    """Builds :class:`Observation` s from aligned frames of calibrated cameras.

    Args:
        calibrations: camera_id -> calibration (intrinsics at the frames' resolution and ``T_base_cam``).
        config: crop, voxel size, history.
    """

    def __init__(
        self, calibrations: Mapping[str, CameraCalibration], config: ObservationConfig = ObservationConfig()
    ) -> None:  # noqa: B008, E501
        if not calibrations:
            raise CalibrationError("ObservationBuilder: no camera calibrations given")
        self.config = config
        self.calibrations = dict(calibrations)
        self._projectors = {
            cid: DepthProjector(cal.camera, cal.T_base_cam, max_range_m=config.max_range_m)
            for cid, cal in self.calibrations.items()
        }
        self._banks = {cid: MemoryBank(config.memory_bank) for cid in self.calibrations} if config.memory_bank else {}

    @classmethod
    def from_scene(
        cls,
        scene: str,
        camera_ids: Sequence[str],
        config: ObservationConfig = ObservationConfig(),
        root: str | None = None,  # noqa: B008
    ) -> ObservationBuilder:
        """Load ``calibration/<scene>/<camera>.yaml`` for each camera (errors if missing or stale)."""
        return cls({cid: load_calibration(scene, cid, root) for cid in camera_ids}, config)

    def _projector(self, frame: Frame) -> DepthProjector:
        projector = self._projectors.get(frame.camera_id)
        if projector is None:
            raise CalibrationError(
                f"frame from camera {frame.camera_id!r} but this builder has calibrations only for "
                f"{sorted(self._projectors)}; calibrate it or fix the camera_id"
            )
        return projector

    def camera_observation(self, frame: Frame) -> CameraObservation:
        """RGB + (H, W, 3) float32 base-frame XYZ (NaN where depth is invalid or outside ``crop``)."""
        xyz = self._projector(frame).to_xyz(frame.depth, frame.depth_scale)
        crop = self.config.crop
        if crop is not None:
            lo, hi = np.asarray(crop[0], np.float32), np.asarray(crop[1], np.float32)
            with np.errstate(invalid="ignore"):
                outside = np.any((xyz < lo) | (xyz > hi), axis=2)
            xyz[outside] = np.nan
        return CameraObservation(frame.camera_id, frame.color, xyz, frame.t_capture_ns)

    def build(self, frames: Sequence[Frame], state: RobotState, task: str = "") -> Observation:
        """One policy observation from one frame per camera (+ sampled history when configured).

        ``t_obs_ns`` is the oldest capture time among the current frames and the state.

        Raises:
            CalibrationError: a frame's camera has no calibration. ShapeError: duplicate cameras or no frames.
        """
        if not frames:
            raise ShapeError("ObservationBuilder.build: no frames given")
        ids = [f.camera_id for f in frames]
        if len(set(ids)) != len(ids):
            raise ShapeError(f"ObservationBuilder.build: one frame per camera expected, got {ids}")
        cameras: list[CameraObservation] = []
        history: list[CameraObservation] = []
        for frame in frames:
            obs = self.camera_observation(frame)
            cameras.append(obs)
            bank = self._banks.get(frame.camera_id)
            if bank is not None:
                bank.add(obs)
                for i, past in enumerate(bank.sample(), start=1):
                    history.append(
                        CameraObservation(f"{frame.camera_id}@h{i}", past.rgb, past.xyz_base, past.t_capture_ns)
                    )
        t_obs = min([f.t_capture_ns for f in frames] + [state.t_ns])
        return Observation(t_obs, state, tuple(cameras + history), task)

    def fused_cloud(self, frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray]:
        """All cameras' valid points in the base frame, cropped and voxel-downsampled as configured.

        Returns:
            (points (N, 3) float32 metres, colours (N, 3) uint8 RGB).
        """
        pts, cols = [], []
        for frame in frames:
            p, c = self._projector(frame).point_cloud_colored(
                frame.depth, frame.depth_scale, frame.color, self.config.crop
            )
            pts.append(p)
            cols.append(c)
        points = np.concatenate(pts) if pts else np.zeros((0, 3), np.float32)
        colors = np.concatenate(cols) if cols else np.zeros((0, 3), np.uint8)
        if self.config.voxel_m is not None and len(points):
            down, down_cols = voxel_downsample(points, colors, self.config.voxel_m)
            assert down_cols is not None
            return down, down_cols
        return points.astype(np.float32), colors
