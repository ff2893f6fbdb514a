"""Multi-view geometry for decoders: triangulation, robust rigid fits, pose refinement, pose-sequence IK.

All functions are batched over leading axes (e.g. the horizon of an action chunk) and pure numpy, except
:func:`triangulate` which uses OpenCV's ``cv2.triangulatePoints`` when OpenCV is installed (a numpy DLT gives
the same linear solution otherwise).

Conventions: points in metres; rotations (..., 3, 3) float64 proper rotation matrices; rotation vectors
(axis * angle, radians). A rigid fit ``(R, t)`` maps *model* points into the observed frame:
``observed ~= model @ R.T + t``. Image coordinates here are **undistorted normalised** coordinates
``(X/Z, Y/Z)`` of a camera's optical frame (x right, y down, z forward); callers undistort pixels first.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from robot_stack.errors import DecodeError, IKError, ShapeError
from robot_stack.types import Pose

if TYPE_CHECKING:
    from robot_stack.control.ik import PinocchioIK

log = logging.getLogger("robot_stack.decoders.geometry")

__all__ = [
    "PoseSequenceIK",
    "ReachPolicy",
    "ReachStats",
    "RigidFit",
    "ViewGeometry",
    "kabsch",
    "refine_pose_reprojection",
    "robust_rigid_fit",
    "rotation_angle",
    "so3_exp",
    "solve_pose_sequence",
    "solve_pose_sequence_checked",
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


# ------------------------------------------------------------------------------------------- pose -> joints


class ReachStats:
    """Running record (thread-safe) of how many steps of each solved TCP sequence a :class:`ReachPolicy` had to
    change before execution: raised over the floor, clamped onto the reachable set, or dropped. Best-effort steps
    (within the tolerance) count as solved.

    A policy whose chunks are mostly changed, chunk after chunk, is asking for motion the arm cannot make: a
    supervisor (:class:`robot_stack.runtime.RecoveryConfig`) reads :attr:`last_fraction` after each decode.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sequences = 0
        self.steps = 0
        self.changed = 0
        self._last = (0, 0)
        self._tcp_goal: tuple[np.ndarray, np.ndarray] | None = None

    def record(
        self, steps: int, changed: int, tcp_xyz: np.ndarray | None = None, goal_xyz: np.ndarray | None = None
    ) -> None:
        """Add one solved sequence of ``steps`` steps of which ``changed`` were changed (or dropped).

        ``tcp_xyz``: (3,) m base frame, the TCP when the sequence was solved; ``goal_xyz``: (3,) m, the sequence's
        last target (the policy's goal, raised over the floor if it was below it). Either None = unknown."""
        with self._lock:
            self.sequences += 1
            self.steps += int(steps)
            self.changed += int(changed)
            self._last = (int(steps), int(changed))
            known = tcp_xyz is not None and goal_xyz is not None
            self._tcp_goal = (np.array(tcp_xyz, np.float64), np.array(goal_xyz, np.float64)) if known else None

    @property
    def last_tcp_goal(self) -> tuple[np.ndarray, np.ndarray] | None:
        """((3,), (3,)) m base frame: the TCP and the policy's goal of the last sequence; None if unknown. A policy
        close to its goal, or whose arm got closer to it, is not stuck however much of its chunk was changed."""
        with self._lock:
            return None if self._tcp_goal is None else (self._tcp_goal[0].copy(), self._tcp_goal[1].copy())

    @property
    def last_goal_distance_m(self) -> float | None:
        """Distance (m) from the TCP to the last sequence's goal; None if unknown."""
        pair = self.last_tcp_goal
        return None if pair is None else float(np.linalg.norm(pair[1] - pair[0]))

    @property
    def last_fraction(self) -> float:
        """Fraction (0..1) of the last sequence's steps that were changed; 0 before the first."""
        with self._lock:
            steps, changed = self._last
            return changed / steps if steps else 0.0


@dataclass(frozen=True)
class ReachPolicy:
    """How :func:`solve_pose_sequence` treats TCP targets the IK cannot hit exactly.

    Attributes:
        fallback_q: (n,) rad neutral posture (e.g. ``panda.HOME_Q``) the IK restarts from when the warm start
            fails; None = warm start only.
        best_effort_m: a non-converged solution is accepted if its position residual is within this (m) and its
            orientation residual within ``best_effort_rad``.
        best_effort_rad: orientation residual accepted with ``best_effort_m``, rad.
        clamp_m: a target farther than ``best_effort_m`` from the reachable set (orientation met, position not)
            is clamped onto the nearest reachable pose the IK found if that is within this distance (m);
            0 = never clamp.
        drop_unreachable: steps that still fail are dropped from the sequence (logged) instead of failing the
            whole chunk; the chunk fails only if no step is left.
        floor_z_m: TCP targets below this height (base-frame z, m; e.g. the table top plus a margin) are raised
            to it before the IK (logged, counted as clamped): the hand never presses into the table. None = off.
        stats: where to record how many steps of each sequence were changed (:class:`ReachStats`); None = off.
    """

    fallback_q: np.ndarray | None = None
    best_effort_m: float = 0.0
    best_effort_rad: float = 0.0
    clamp_m: float = 0.0
    drop_unreachable: bool = False
    floor_z_m: float | None = None
    stats: ReachStats | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PoseSequenceIK:
    """Result of :func:`solve_pose_sequence_checked`.

    Attributes:
        positions: (H', n) float64 joint positions, rad, one row per kept step.
        kept: (H',) int64 indices of the kept steps in the requested sequence.
        clamped: indices of steps whose target was clamped onto the reachable set.
        best_effort: indices of steps accepted with a residual within the best-effort tolerance.
    """

    positions: np.ndarray
    kept: np.ndarray
    clamped: tuple[int, ...] = ()
    best_effort: tuple[int, ...] = ()


def solve_pose_sequence_checked(
    ik: PinocchioIK,
    poses: Sequence[Pose],
    q_init: np.ndarray,
    max_iters: int,
    what: str,
    reach: ReachPolicy | None = None,
) -> PoseSequenceIK:
    """IK for a sequence of TCP targets, each warm-started from the previous solution (the first from ``q_init``),
    with the per-step handling of unreachable targets set by ``reach`` (default: every step must converge).

    Every step that is not solved exactly (best effort, clamped or dropped) is logged with its reason.

    Raises:
        IKError: a step failed and ``reach`` does not drop it, or every step was dropped.
        ShapeError: ``q_init`` has the wrong shape or is not finite.
    """
    reach = reach or ReachPolicy()
    q = np.asarray(q_init, dtype=np.float64)
    if q.shape != (ik.nq,) or not np.all(np.isfinite(q)):
        raise ShapeError(f"{what}: state.q must be finite ({ik.nq},) rad, got shape {q.shape}")
    if len(poses) == 0:
        raise DecodeError(f"{what}: no poses to solve (empty horizon)")
    fallbacks = () if reach.fallback_q is None else (np.asarray(reach.fallback_q, np.float64),)
    rows: list[np.ndarray] = []
    kept: list[int] = []
    clamped: list[int] = []
    best_effort: list[int] = []
    reasons: list[str] = []
    for k, target in enumerate(poses):
        where = f"{what} step {k}/{len(poses)} (TCP xyz {np.round(target.translation, 4).tolist()} m)"
        floored = reach.floor_z_m is not None and float(target.translation[2]) < reach.floor_z_m
        if floored:
            lifted = np.array(target.translation, dtype=np.float64)
            reasons.append(
                f"{where}: below the floor z = {reach.floor_z_m:.3f} m, raised by "
                f"{(reach.floor_z_m - lifted[2]) * 1e3:.1f} mm"
            )
            lifted[2] = reach.floor_z_m
            target = dataclasses.replace(target, translation=lifted)
        res = ik.solve_with_info(target, q, max_iters=max_iters, fallbacks=fallbacks)
        if not res.converged:
            pos, rot = res.position_error_m, res.rotation_error_rad
            if pos <= reach.best_effort_m and rot <= reach.best_effort_rad:
                best_effort.append(k)
                log.info("%s: best-effort IK accepted, residual %.2f mm / %.4f rad", where, pos * 1e3, rot)
            elif rot <= max(reach.best_effort_rad, ik.config.tol_rotation_rad) and pos <= reach.clamp_m:
                clamped.append(k)
                reasons.append(f"{where}: out of reach, clamped by {pos * 1e3:.1f} mm onto the reachable set")
            else:
                why = (
                    f"{where}: IK did not converge from the warm start"
                    f"{' or the neutral posture' if fallbacks else ''}: residual {pos * 1e3:.2f} mm / {rot:.4f} rad "
                    f"(accepted: {reach.best_effort_m * 1e3:.1f} mm best effort, {reach.clamp_m * 1e3:.1f} mm clamp)"
                )
                if not reach.drop_unreachable:
                    raise IKError(
                        f"{why}. The target may be out of reach or across a joint limit: move it into the "
                        "workspace, warm-start closer, or raise IKConfig.restarts/max_iters."
                    )
                reasons.append(f"{why}; step dropped")
                continue
        if floored and (not clamped or clamped[-1] != k):
            clamped.append(k)
        q = res.q
        rows.append(q)
        kept.append(k)
    if reasons:
        log.warning("%s: %d of %d steps not solved exactly: %s", what, len(reasons), len(poses), "; ".join(reasons))
    if reach.stats is not None:
        goal = np.array(poses[-1].translation, dtype=np.float64)
        if reach.floor_z_m is not None:
            goal[2] = max(goal[2], reach.floor_z_m)
        tcp = ik.fk_xyz(np.asarray(q_init, dtype=np.float64))
        reach.stats.record(len(poses), len(poses) - len(kept) + len(clamped), tcp, goal)
    if not rows:
        raise IKError(f"{what}: no step of the chunk is reachable ({reasons[0] if reasons else 'no steps'})")
    return PoseSequenceIK(np.array(rows), np.array(kept, np.int64), tuple(clamped), tuple(best_effort))


def solve_pose_sequence(
    ik: PinocchioIK, poses: Sequence[Pose], q_init: np.ndarray, max_iters: int, what: str
) -> np.ndarray:
    """IK for a sequence of TCP targets, each warm-started from the previous solution (the first from ``q_init``).

    Shared by decoders whose actions are TCP poses. Warm starts keep consecutive solutions on one branch.

    Args:
        ik: kinematics of the arm.
        poses: H targets ``T_base_tcp``.
        q_init: (n,) float64 rad, the configuration the first solve starts from (usually the observed state).
        max_iters: IK iterations per step.
        what: name of the action language, used in error messages.

    Returns:
        (H, n) float64 joint positions, rad, within the IK's limits.

    Raises:
        IKError: a step did not converge (the message names the step and its target).
        ShapeError: ``q_init`` has the wrong shape or is not finite.
    """
    return solve_pose_sequence_checked(ik, poses, q_init, max_iters, what).positions
