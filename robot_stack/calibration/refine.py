"""Multi-camera extrinsic refinement: Open3D point-to-plane ICP between base-frame clouds of overlapping cameras.

The reference camera's cloud stays fixed; the moving camera's cloud (computed with its current ``T_base_cam``) is
registered onto it coarse-to-fine (voxel sizes 4x, 2x, 1x ``voxel_m``). ICP's answer ``delta`` maps moving points
in the base frame onto the reference, so the refined extrinsics are ``T_base_cam' = delta @ T_base_cam``. The
refinement is then judged by :func:`robot_stack.calibration.health.assess_refinement` and refused (``accepted``
False, with reasons) when it is not trustworthy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from robot_stack.calibration.health import (
    HealthLimits,
    HealthReport,
    assess_refinement,
    constraint_ratio,
    point_to_plane_residuals,
)
from robot_stack.errors import CalibrationError
from robot_stack.types import Pose

__all__ = ["RefineConfig", "RefinementResult", "refine_extrinsics"]

log = logging.getLogger("robot_stack.calibration.refine")


@dataclass(frozen=True)
class RefineConfig:
    """ICP settings (metres).

    Attributes:
        voxel_m: finest voxel size of the downsampled clouds.
        max_correspondence_m: correspondence distance at the finest level (coarser levels scale it up).
        min_points: fewest points per cloud after downsampling.
        max_iterations: ICP iterations per level.
        limits: health-check limits.
    """

    voxel_m: float = 0.004
    max_correspondence_m: float = 0.012
    min_points: int = 500
    max_iterations: int = 40
    limits: HealthLimits = field(default_factory=HealthLimits)


@dataclass(frozen=True)
class RefinementResult:
    """Outcome of :func:`refine_extrinsics`.

    Attributes:
        T_base_cam: refined extrinsics of the moving camera (use only if ``health.accepted``).
        previous: the extrinsics it started from.
        delta: correction applied in the base frame (``T_base_cam = delta @ previous``).
        health: verdict and figures; residuals_after_m: (K,) point-to-plane distances after, metres.
    """

    T_base_cam: Pose
    previous: Pose
    delta: Pose
    health: HealthReport
    residuals_after_m: np.ndarray
    residuals_before_m: np.ndarray

    @property
    def accepted(self) -> bool:
        return self.health.accepted


def _o3d():  # noqa: ANN202
    try:
        import open3d as o3d
    except ImportError as exc:  # pragma: no cover - optional heavy dependency
        raise CalibrationError(f"multi-camera refinement needs open3d ({exc}); pip install open3d") from exc
    return o3d


def _cloud(points: np.ndarray, voxel: float):  # noqa: ANN202
    o3d = _o3d()
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    pcd = pcd.voxel_down_sample(voxel)
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=3 * voxel, max_nn=30))
    return pcd


def refine_extrinsics(
    reference_xyz: np.ndarray,
    moving_xyz: np.ndarray,
    T_base_cam: Pose,
    config: RefineConfig = RefineConfig(),  # noqa: B008 - frozen
    previous: Pose | None = None,
) -> RefinementResult:
    """Refine the moving camera's ``T_base_cam`` by ICP of its cloud onto the reference camera's.

    Args:
        reference_xyz: (N, 3) float base-frame points of the reference camera (no NaN; crop to the workspace).
        moving_xyz: (M, 3) float base-frame points of the camera to refine, computed with ``T_base_cam``.
        T_base_cam: current extrinsics of the moving camera.
        previous: calibration to measure the change against (default ``T_base_cam``).

    Raises:
        CalibrationError: a cloud has too few points after downsampling (the message says which).
    """
    o3d = _o3d()
    reg = o3d.pipelines.registration
    for name, pts in (("reference", reference_xyz), ("moving", moving_xyz)):
        arr = np.asarray(pts)
        if arr.ndim != 2 or arr.shape[1] != 3 or not np.all(np.isfinite(arr)):
            raise CalibrationError(f"refine_extrinsics: {name} cloud must be finite (N, 3) points, got {arr.shape}")
    fine_ref = _cloud(reference_xyz, config.voxel_m)
    fine_mov = _cloud(moving_xyz, config.voxel_m)
    for name, pcd in (("reference", fine_ref), ("moving", fine_mov)):
        if len(pcd.points) < config.min_points:
            raise CalibrationError(
                f"refine_extrinsics: the {name} cloud has {len(pcd.points)} points after {config.voxel_m * 1e3:.0f} mm "
                f"voxels, need >= {config.min_points}; check the camera sees the workspace and depth is valid"
            )
    transform = np.eye(4)
    fitness = 0.0
    for scale in (4, 2, 1):
        voxel = config.voxel_m * scale
        ref = fine_ref if scale == 1 else _cloud(reference_xyz, voxel)
        mov = fine_mov if scale == 1 else _cloud(moving_xyz, voxel)
        result = reg.registration_icp(
            mov,
            ref,
            config.max_correspondence_m * scale,
            transform,
            reg.TransformationEstimationPointToPlane(),
            reg.ICPConvergenceCriteria(max_iteration=config.max_iterations),
        )
        transform, fitness = np.asarray(result.transformation), float(result.fitness)
    delta = Pose.from_matrix(transform, "base", "base")
    ref_pts, ref_normals = np.asarray(fine_ref.points), np.asarray(fine_ref.normals)
    mov_pts = np.asarray(fine_mov.points)
    before, matched_before, normals_before = point_to_plane_residuals(
        mov_pts, ref_pts, ref_normals, config.max_correspondence_m
    )
    moved = delta.apply(mov_pts)
    after, matched, _ = point_to_plane_residuals(moved, ref_pts, ref_normals, config.max_correspondence_m)
    refined = Pose(
        delta.rotation @ T_base_cam.rotation, delta.apply(T_base_cam.translation), T_base_cam.parent, T_base_cam.child
    )
    prev = previous if previous is not None else T_base_cam
    change_m, change_rad = refined.distance_to(prev)
    health = assess_refinement(
        overlap_ratio=float(matched.mean()) if matched.size else 0.0,
        residuals_after=after,
        residuals_before=before,
        # judged on the shared geometry at the starting pose, independent of where ICP went
        constraint=constraint_ratio(mov_pts[matched_before], normals_before),
        change_m=change_m,
        change_deg=float(np.rad2deg(change_rad)),
        fitness=fitness,
        limits=config.limits,
    )
    if health.accepted:
        log.info("refinement accepted: %s", health.as_dict())
    else:
        log.warning("refinement refused: %s", "; ".join(health.reasons))
    return RefinementResult(refined, T_base_cam, delta, health, after, before)
