"""Geometry shared by calibration and decoders: SO(3) maps, triangulation, robust rigid fits, pose refinement.

All functions are batched over leading axes (e.g. the horizon of an action chunk) and pure numpy, except
:func:`triangulate` which uses OpenCV's ``cv2.triangulatePoints`` when OpenCV is installed (a numpy DLT gives
the same linear solution otherwise).

Conventions: points in metres; rotations (..., 3, 3) float64 proper rotation matrices; rotation vectors
(axis * angle, radians). A rigid fit ``(R, t)`` maps *model* points into the observed frame:
``observed ~= model @ R.T + t``. Image coordinates here are **undistorted normalised** coordinates
``(X/Z, Y/Z)`` of a camera's optical frame (x right, y down, z forward); callers undistort pixels first.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import ShapeError
from robot_stack.types import Pose

log = logging.getLogger("robot_stack.geometry")

__all__ = [
    "RigidFit",
    "ViewGeometry",
    "kabsch",
    "refine_pose_reprojection",
    "robust_rigid_fit",
    "rotation_angle",
    "so3_exp",
    "triangulate",
    "triangulate_dlt",
]


# ------------------------------------------------------------------------------------------------- SO(3)


def _skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices ``[v]x``."""
    out = np.zeros((*v.shape[:-1], 3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def so3_exp(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula, batched: (..., 3) rotation vectors (rad) -> (..., 3, 3) rotation matrices."""
    w = np.asarray(rotvec, dtype=np.float64)
    theta = np.linalg.norm(w, axis=-1)[..., None, None]
    k = _skew(w)
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(safe)) / safe**2)
    return np.eye(3) + a * k + b * (k @ k)


def rotation_angle(rotation: np.ndarray) -> np.ndarray:
    """Angle (rad) of (..., 3, 3) rotation matrices, batched, in [0, pi]."""
    r = np.asarray(rotation, dtype=np.float64)
    cos = (np.trace(r, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


# ------------------------------------------------------------------------------------------ triangulation


def triangulate_dlt(p1: np.ndarray, p2: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Linear (DLT) two-view triangulation in numpy, the same solution as ``cv2.triangulatePoints``.

    Args:
        p1, p2: (3, 4) projection matrices of the two views (here ``[R_cam_base | t_cam_base]``).
        x1, x2: (N, 2) image coordinates in each view (normalised if the matrices are).

    Returns:
        (N, 4) float64 homogeneous points (unit norm; the 4th coordinate is ~0 for points at infinity).
    """
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    a = np.empty((x1.shape[0], 4, 4))
    a[:, 0] = x1[:, :1] * p1[2] - p1[0]
    a[:, 1] = x1[:, 1:2] * p1[2] - p1[1]
    a[:, 2] = x2[:, :1] * p2[2] - p2[0]
    a[:, 3] = x2[:, 1:2] * p2[2] - p2[1]
    _, _, vt = np.linalg.svd(a)
    return vt[:, -1, :]


def triangulate(p1: np.ndarray, p2: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Two-view triangulation: ``cv2.triangulatePoints`` if OpenCV is installed, else :func:`triangulate_dlt`.

    Args and return as in :func:`triangulate_dlt`; returns (N, 4) float64 homogeneous points.
    """
    try:
        import cv2
    except ImportError:  # pragma: no cover - exercised only where OpenCV is absent
        return triangulate_dlt(p1, p2, x1, x2)
    x1 = np.ascontiguousarray(np.asarray(x1, np.float64).T)
    x2 = np.ascontiguousarray(np.asarray(x2, np.float64).T)
    return np.asarray(cv2.triangulatePoints(p1, p2, x1, x2), dtype=np.float64).T


# ------------------------------------------------------------------------------------------------ fitting


def kabsch(model: np.ndarray, observed: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares rigid transform (Kabsch / Umeyama without scale), batched.

    Args:
        model: (..., K, 3) points in the model frame (broadcast against ``observed``).
        observed: (..., K, 3) the same points observed in the target frame.
        weights: (..., K) non-negative weights (0 = ignore the point); None = all 1. At least three
            non-collinear points must carry weight, or the rotation is arbitrary.

    Returns:
        ``(R, t)``: (..., 3, 3) proper rotations and (..., 3) translations minimising
        ``sum_k w_k |R m_k + t - o_k|^2``.
    """
    m = np.asarray(model, np.float64)
    o = np.asarray(observed, np.float64)
    w = np.ones(np.broadcast_shapes(m.shape, o.shape)[:-1]) if weights is None else np.asarray(weights, np.float64)
    wsum = np.maximum(w.sum(axis=-1, keepdims=True), 1e-12)
    cm = (w[..., None] * m).sum(axis=-2) / wsum
    co = (w[..., None] * o).sum(axis=-2) / wsum
    h = np.einsum("...k,...ki,...kj->...ij", w, m - cm[..., None, :], o - co[..., None, :])
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
    d = np.where(d == 0, 1.0, d)
    fix = np.ones((*d.shape, 3))
    fix[..., 2] = d
    r = np.swapaxes(vt, -1, -2) @ (fix[..., :, None] * np.swapaxes(u, -1, -2))
    t = co - np.einsum("...ij,...j->...i", r, cm)
    return r, t


@dataclass(frozen=True)
class RigidFit:
    """Result of :func:`robust_rigid_fit` for H independent point sets.

    Attributes:
        rotation: (H, 3, 3) float64, model -> observed frame.
        translation: (H, 3) float64 metres.
        inliers: (H, K) bool, points used in the final fit.
        residual_m: (H, K) float64 metres, ``|R m + t - o|`` per point (NaN where the point was invalid).
        rms_m: (H,) float64 metres, RMS residual over the inliers.
    """

    rotation: np.ndarray
    translation: np.ndarray
    inliers: np.ndarray
    residual_m: np.ndarray
    rms_m: np.ndarray


def _residuals(model: np.ndarray, observed: np.ndarray, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    pred = np.einsum("...ij,...kj->...ki", r, model) + t[..., None, :]
    return np.linalg.norm(pred - observed, axis=-1)


def robust_rigid_fit(
    model: np.ndarray,
    observed: np.ndarray,
    valid: np.ndarray,
    threshold_m: float,
    max_subsets: int = 256,
    seed: int = 0,
) -> RigidFit:
    """Rigid fit of ``model`` to each of H observed point sets with outlier rejection (MSAC, then refits).

    Hypotheses are Kabsch fits to 3-point subsets of the model (all of them when there are at most
    ``max_subsets``, otherwise a seeded random sample), scored by the truncated squared residual over the valid
    points; the best hypothesis' inliers (residual < ``threshold_m``) are refitted with Kabsch twice (inliers
    re-evaluated in between). Subsets containing an invalid point are skipped.

    Args:
        model: (K, 3) model points, metres (K >= 3, not all collinear).
        observed: (H, K, 3) observed points, metres; entries where ``valid`` is False are ignored (may be NaN).
        valid: (H, K) bool.
        threshold_m: inlier distance, metres.
        max_subsets: at most this many 3-point hypotheses per set.
        seed: seed of the subset sample (only used when there are more than ``max_subsets`` subsets).

    Returns:
        :class:`RigidFit`; sets with fewer than 3 valid points get identity rotation, NaN translation and no
        inliers (the caller decides whether that is an error).
    """
    model = np.asarray(model, np.float64)
    observed = np.asarray(observed, np.float64)
    valid = np.asarray(valid, bool)
    k = model.shape[0]
    if model.shape != (k, 3) or k < 3 or observed.shape[-2:] != (k, 3) or valid.shape != observed.shape[:-1]:
        raise ShapeError(
            f"robust_rigid_fit: expected model (K>=3, 3), observed (H, K, 3), valid (H, K); got {model.shape}, "
            f"{observed.shape}, {valid.shape}"
        )
    obs = np.where(valid[..., None], observed, 0.0)
    # sets whose all-point fit already explains every valid point need no hypotheses (the common case)
    r, t = kabsch(model, obs, valid.astype(np.float64))
    inl = valid & (_residuals(model, obs, r, t) < threshold_m)
    hard = np.flatnonzero((inl != valid).any(axis=1) | (valid.sum(axis=1) < 3))
    if hard.size:
        oh, vh = obs[hard], valid[hard]
        subsets = np.array(list(itertools.combinations(range(k), 3)), dtype=np.intp)
        if len(subsets) > max_subsets:
            rng = np.random.default_rng(seed)
            subsets = subsets[rng.choice(len(subsets), max_subsets, replace=False)]
        # hypotheses: (h, S) fits of 3 points each, scored by the truncated squared residual (MSAC)
        r_h, t_h = kabsch(model[subsets], oh[:, subsets], vh[:, subsets].astype(np.float64))
        res = _residuals(model, oh[:, None], r_h, t_h)  # (h, S, K)
        cost = np.where(vh[:, None], np.minimum(res, threshold_m) ** 2, 0.0).sum(axis=-1)
        cost = np.where(vh[:, subsets].all(axis=-1), cost, np.inf)
        best = np.argmin(cost, axis=1)
        rows = np.arange(len(hard))
        inl_h = vh & (res[rows, best] < threshold_m)
        rr, tt = r_h[rows, best], t_h[rows, best]
        for _ in range(2):
            enough = inl_h.sum(axis=1) >= 3
            r_f, t_f = kabsch(model, oh, inl_h.astype(np.float64))
            rr = np.where(enough[:, None, None], r_f, rr)
            tt = np.where(enough[:, None], t_f, tt)
            inl_h = vh & (_residuals(model, oh, rr, tt) < threshold_m)
        r[hard], t[hard], inl[hard] = rr, tt, inl_h
    resid = np.where(valid, _residuals(model, obs, r, t), np.nan)
    n_inl = inl.sum(axis=1)
    rms = np.sqrt((np.where(inl, resid, 0.0) ** 2).sum(axis=1) / np.maximum(n_inl, 1))
    degenerate = valid.sum(axis=1) < 3
    if np.any(degenerate):
        r = np.where(degenerate[:, None, None], np.eye(3), r)
        t = np.where(degenerate[:, None], np.nan, t)
        inl = inl & ~degenerate[:, None]
        rms = np.where(degenerate, np.nan, rms)
    return RigidFit(r, t, inl, resid, rms)


@dataclass(frozen=True)
class ViewGeometry:
    """One calibrated view as the refinement needs it.

    Attributes:
        R_cam_base: (3, 3) float64, rotation base -> camera optical frame.
        t_cam_base: (3,) float64 metres.
        focal_px: (2,) float64 ``(fx, fy)``: scales normalised residuals to pixels.
    """

    R_cam_base: np.ndarray
    t_cam_base: np.ndarray
    focal_px: np.ndarray

    @classmethod
    def from_pose(cls, T_base_cam: Pose, fx: float, fy: float) -> ViewGeometry:
        inv = T_base_cam.inverse()
        return cls(np.asarray(inv.rotation), np.asarray(inv.translation), np.array([fx, fy], dtype=np.float64))

    @property
    def projection(self) -> np.ndarray:
        """(3, 4) ``[R_cam_base | t_cam_base]``: base-frame points -> normalised image coordinates."""
        return np.hstack([self.R_cam_base, self.t_cam_base[:, None]])

    def to_camera(self, points_base: np.ndarray) -> np.ndarray:
        """(..., 3) base-frame points -> (..., 3) optical-frame points, metres."""
        return points_base @ self.R_cam_base.T + self.t_cam_base


def refine_pose_reprojection(
    rotation: np.ndarray,
    translation: np.ndarray,
    model: np.ndarray,
    views: Sequence[ViewGeometry],
    observed: np.ndarray,
    weights: np.ndarray,
    iterations: int = 6,
    damping: float = 1e-9,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood refinement of H rigid poses by Gauss-Newton on the reprojection error (pixels).

    Minimises ``sum_v sum_k w_vk |f_v * (pi(R_cv (R m_k + t) + t_cv) - x_vk)|^2`` over ``(R, t)`` with a left
    perturbation ``R <- exp(dtheta) R``, ``t <- t + dt``; analytic Jacobians; a step that raises the cost is
    not taken (that set keeps its previous pose).

    Args:
        rotation: (H, 3, 3) initial rotations model -> base; translation: (H, 3) metres.
        model: (K, 3) model points, metres.
        views: V calibrated views.
        observed: (H, V, K, 2) undistorted normalised image coordinates.
        weights: (H, V, K) non-negative (0 = unused observation).
        iterations: Gauss-Newton iterations.
        damping: Levenberg damping added to the normal equations' diagonal.

    Returns:
        ``(R, t)`` refined, shapes as given.
    """
    r = np.array(rotation, dtype=np.float64)
    t = np.array(translation, dtype=np.float64)
    model = np.asarray(model, np.float64)
    rc = np.stack([v.R_cam_base for v in views])  # (V, 3, 3)
    tc = np.stack([v.t_cam_base for v in views])  # (V, 3)
    f = np.stack([v.focal_px for v in views])  # (V, 2)
    obs = np.where(weights[..., None] > 0, observed, 0.0)

    def residual(r_: np.ndarray, t_: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rm = model @ np.swapaxes(r_, 1, 2)  # (H, K, 3) rotated model
        x = rm + t_[:, None]
        xc = x[:, None] @ np.swapaxes(rc, 1, 2)[None] + tc[None, :, None]  # (H, V, K, 3)
        z = np.where(np.abs(xc[..., 2]) > 1e-9, xc[..., 2], 1e-9)
        uv = xc[..., :2] / z[..., None]
        e = (uv - obs) * f[None, :, None]  # pixels
        return e, xc, rm

    def cost_of(e: np.ndarray) -> np.ndarray:
        return (weights * (e**2).sum(axis=-1)).sum(axis=(1, 2))

    e, xc, rm = residual(r, t)
    cost = cost_of(e)
    eye6 = np.eye(6)
    for _ in range(iterations):
        z = np.where(np.abs(xc[..., 2]) > 1e-9, xc[..., 2], 1e-9)
        # d(uv)/d(xc): (H, V, K, 2, 3), scaled to pixels
        duv = np.zeros((*xc.shape[:-1], 2, 3))
        duv[..., 0, 0] = 1.0 / z
        duv[..., 1, 1] = 1.0 / z
        duv[..., 0, 2] = -xc[..., 0] / z**2
        duv[..., 1, 2] = -xc[..., 1] / z**2
        duv *= f[None, :, None, :, None]
        # d(x_base)/d(dtheta, dt) = [-[R m]x | I]: (H, K, 3, 6)
        dx = np.concatenate([-_skew(rm), np.broadcast_to(np.eye(3), (*rm.shape[:-1], 3, 3))], axis=-1)
        jac = (duv @ rc[None, :, None]) @ dx[:, None]  # (H, V, K, 2, 6)
        nh = jac.shape[0]
        jf = jac.reshape(nh, -1, 6)
        jw = (jac * weights[..., None, None]).reshape(nh, -1, 6)
        a = np.swapaxes(jw, 1, 2) @ jf + damping * eye6
        g = (np.swapaxes(jw, 1, 2) @ e.reshape(nh, -1, 1))[..., 0]
        try:
            step = -np.linalg.solve(a, g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            break
        r_new = so3_exp(step[:, :3]) @ r
        t_new = t + step[:, 3:]
        e_new, xc_new, rm_new = residual(r_new, t_new)
        cost_new = cost_of(e_new)
        better = np.isfinite(cost_new) & (cost_new <= cost)
        r = np.where(better[:, None, None], r_new, r)
        t = np.where(better[:, None], t_new, t)
        e = np.where(better[:, None, None, None], e_new, e)
        xc = np.where(better[:, None, None, None], xc_new, xc)
        rm = np.where(better[:, None, None], rm_new, rm)
        cost = np.where(better, cost_new, cost)
        if np.all(np.abs(step) < 1e-10):
            break
    # re-orthonormalise (accumulated products of exp maps drift by ~1e-16 per step)
    u, _, vt = np.linalg.svd(r)
    return u @ vt, t
