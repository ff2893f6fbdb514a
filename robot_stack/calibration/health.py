"""Health checks of an extrinsic refinement that do not trust ICP fitness alone.

ICP reports a high fitness for a wrong answer whenever most points have *some* neighbour: two views of one
table plane slide freely along it, a 10 cm error converges to a neighbouring local minimum, a small overlap
matches noise. :func:`assess_refinement` therefore looks at

* the **overlap ratio**: fraction of the moving cloud with a reference point within the correspondence distance;
* the **residual distribution** after alignment (median and 90th percentile of point-to-plane distances, which
  must be at the sensor's noise level) and its improvement over the residuals before;
* the **constraint** of the geometry: the smallest / largest eigenvalue of the 6x6 point-to-plane information
  matrix (rotations scaled by the cloud radius); a plane or a cylinder leaves a direction unobserved;
* the **change vs the previous calibration**: a refinement is a correction, not a re-calibration; larger changes
  mean the camera was moved (re-run hand-eye) or ICP converged elsewhere.

Each failed check adds a reason that says what to do; ``accepted`` is True only when none failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HealthLimits", "HealthReport", "assess_refinement", "constraint_ratio", "point_to_plane_residuals"]


@dataclass(frozen=True)
class HealthLimits:
    """Acceptance limits (metres, degrees, fractions)."""

    min_overlap: float = 0.3
    max_residual_p50_m: float = 0.003
    max_residual_p90_m: float = 0.008
    max_change_m: float = 0.03
    max_change_deg: float = 3.0
    min_constraint_ratio: float = 1e-3
    min_improvement: float = 0.0  # residual median after must not exceed before * (1 - min_improvement) + noise


@dataclass(frozen=True)
class HealthReport:
    """Verdict and figures of one refinement (all distances in metres)."""

    accepted: bool
    reasons: tuple[str, ...]
    overlap_ratio: float
    residual_p50_m: float
    residual_p90_m: float
    residual_p50_before_m: float
    constraint_ratio: float
    change_m: float
    change_deg: float
    fitness: float

    def as_dict(self) -> dict[str, float | bool | str]:
        return {
            "accepted": self.accepted,
            "reasons": "; ".join(self.reasons),
            "overlap_ratio": round(self.overlap_ratio, 4),
            "residual_p50_mm": round(self.residual_p50_m * 1e3, 3),
            "residual_p90_mm": round(self.residual_p90_m * 1e3, 3),
            "residual_p50_before_mm": round(self.residual_p50_before_m * 1e3, 3),
            "constraint_ratio": float(f"{self.constraint_ratio:.4g}"),
            "change_mm": round(self.change_m * 1e3, 3),
            "change_deg": round(self.change_deg, 4),
            "icp_fitness": round(self.fitness, 4),
        }


def point_to_plane_residuals(
    moving: np.ndarray, reference: np.ndarray, reference_normals: np.ndarray, max_distance_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-neighbour point-to-plane distances of ``moving`` (N, 3) to ``reference`` (M, 3) with unit normals.

    Returns:
        (residuals (K,) float64 metres of the matched points, matched mask (N,) bool, normals (K, 3) matched).
    """
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(reference).query(moving, distance_upper_bound=max_distance_m)
    matched = np.isfinite(dist)
    normals = reference_normals[idx[matched]]
    diff = moving[matched] - reference[idx[matched]]
    return np.abs(np.sum(diff * normals, axis=1)), matched, normals


def constraint_ratio(points: np.ndarray, normals: np.ndarray) -> float:
    """Smallest / largest eigenvalue of the point-to-plane information matrix ``sum J^T J``, ``J = [p x n / r, n]``.

    Rotations are scaled by the cloud's RMS radius ``r`` so both halves are in metres. ~0 = an unobserved motion.
    """
    if len(points) < 6:
        return 0.0
    centred = points - points.mean(axis=0)
    radius = float(np.sqrt(np.mean(np.sum(centred**2, axis=1)))) or 1.0
    jac = np.hstack([np.cross(centred, normals) / radius, normals])
    eig = np.linalg.eigvalsh(jac.T @ jac)
    return float(max(eig[0], 0.0) / eig[-1]) if eig[-1] > 0 else 0.0


def assess_refinement(
    overlap_ratio: float,
    residuals_after: np.ndarray,
    residuals_before: np.ndarray,
    constraint: float,
    change_m: float,
    change_deg: float,
    fitness: float,
    limits: HealthLimits = HealthLimits(),  # noqa: B008 - frozen
) -> HealthReport:
    """Apply :class:`HealthLimits` (see module docstring) and collect the reasons to refuse."""
    reasons: list[str] = []
    p50 = float(np.median(residuals_after)) if residuals_after.size else float("inf")
    p90 = float(np.percentile(residuals_after, 90)) if residuals_after.size else float("inf")
    p50_before = float(np.median(residuals_before)) if residuals_before.size else float("inf")
    if overlap_ratio < limits.min_overlap:
        reasons.append(
            f"overlap {overlap_ratio:.0%} < {limits.min_overlap:.0%}: the cameras see too little of the same scene; "
            "point them at a common region with 3-D structure (objects, not only the table)"
        )
    if p50 > limits.max_residual_p50_m or p90 > limits.max_residual_p90_m:
        reasons.append(
            f"residuals after ICP p50 {p50 * 1e3:.1f} mm / p90 {p90 * 1e3:.1f} mm exceed "
            f"{limits.max_residual_p50_m * 1e3:.1f} / {limits.max_residual_p90_m * 1e3:.1f} mm: the clouds do not "
            "agree (wrong local minimum, moving scene, or depth artefacts); re-run hand-eye calibration"
        )
    if np.isfinite(p50_before) and p50 > p50_before * (1.0 - limits.min_improvement) + 1e-4:
        reasons.append(
            f"ICP made the residual median worse ({p50_before * 1e3:.2f} -> {p50 * 1e3:.2f} mm); keeping the old one"
        )
    if constraint < limits.min_constraint_ratio:
        reasons.append(
            f"geometry constrains the pose poorly (constraint ratio {constraint:.1e} < "
            f"{limits.min_constraint_ratio:.0e}, e.g. only a plane is visible); add objects with faces in different "
            "directions to the shared view"
        )
    if change_m > limits.max_change_m or change_deg > limits.max_change_deg:
        reasons.append(
            f"refinement moves the camera {change_m * 1e3:.1f} mm / {change_deg:.2f} deg from the previous "
            f"calibration (limit {limits.max_change_m * 1e3:.0f} mm / {limits.max_change_deg:g} deg): the camera was "
            "probably moved; re-run `robot-stack calibrate hand-eye` instead of refining"
        )
    return HealthReport(
        accepted=not reasons,
        reasons=tuple(reasons),
        overlap_ratio=float(overlap_ratio),
        residual_p50_m=p50,
        residual_p90_m=p90,
        residual_p50_before_m=p50_before,
        constraint_ratio=float(constraint),
        change_m=float(change_m),
        change_deg=float(change_deg),
        fitness=float(fitness),
    )
