"""``motion_tracks`` action head (MT-π style): 2D gripper keypoint tracks in two calibrated views -> joints.

The policy predicts, for each step ``k`` of the horizon and each keypoint ``j`` of a canonical gripper model,
the keypoint's pixel position in each of two calibrated cameras. Decoding, per step:

1. undistort the pixels (the calibration's OpenCV model) to normalised image coordinates;
2. triangulate every keypoint from the two views (``cv2.triangulatePoints``); points that land behind (or
   within ``min_depth_m`` of) either camera, or whose reprojection error in either view exceeds
   ``reprojection_threshold_px``, are outliers;
3. fit the rigid transform of the canonical keypoint model (:class:`GripperKeypoints`, points fixed in the TCP
   frame) to the triangulated points: MSAC over 3-point Kabsch hypotheses, then Kabsch refits on the inliers
   (points within ``fit_threshold_m``) — this catches corrupted tracks that slide along an epipolar line, which
   the reprojection check cannot see;
4. refine the pose by Gauss-Newton on the reprojection error of the inlier observations (the maximum-likelihood
   pose under Gaussian pixel noise), giving ``T_base_tcp``;

then inverse kinematics (:func:`~robot_stack.kinematics.reach.solve_pose_sequence`, warm-started from the
observed ``q``) turns the 6-DoF TCP poses into a timestamped :class:`~robot_stack.types.JointTrajectory`; step
``k`` is meant for ``t_obs + latency_offset + k * dt``.

**Action layout** (``ActionChunk.actions``, (horizon, V*K*2) float32, pixels): ``actions[k]`` is the
concatenation over the views, in ``camera_ids`` order (default ``("front", "side")``), of that view's
``(K, 2)`` track at step ``k`` flattened row-major: ``[u_0, v_0, u_1, v_1, ...]`` with ``u`` = column and
``v`` = row of the *distorted* image as captured (pixel centres at integer coordinates, as in
:mod:`robot_stack.calibration.projection`). :meth:`MotionTracks.tracks_to_actions` /
:meth:`MotionTracks.actions_to_tracks` convert. ``ActionChunk.gripper`` carries the opening in [0, 1].

**Forward model** (what a policy that "speaks tracks" must emit): :meth:`MotionTracks.project` maps TCP poses
``T_base_tcp`` to tracks: ``p_base = R_tcp @ m_j + t_tcp``, ``p_cam = R_cam_base @ p_base + t_cam_base``
(``T_cam_base = T_base_cam^-1`` from the calibration file), ``x = p_cam.x / p_cam.z``, ``y = p_cam.y / p_cam.z``,
OpenCV distortion, ``u = fx * x_d + cx``, ``v = fy * y_d + cy``.

Accuracy with the shipped calibrations (``front`` and ``side``, 640x480 each) and 1 px Gaussian noise on every
track coordinate, over random poses in the workspace (``tests/test_decode_tracks.py``): about 1.3 mm / 0.8 deg
mean TCP error (95th percentile about 2.4 mm / 1.6 deg).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from robot_stack.calibration.projection import distort_normalized, undistort_normalized
from robot_stack.calibration.store import CameraCalibration, load_calibration
from robot_stack.decoders.base import Decoder
from robot_stack.errors import ConfigError, DecodeError, ShapeError
from robot_stack.geometry import ViewGeometry, refine_pose_reprojection, robust_rigid_fit, triangulate
from robot_stack.kinematics.reach import solve_pose_sequence
from robot_stack.types import ActionChunk, JointTrajectory, Pose, RobotState

if TYPE_CHECKING:
    from robot_stack.kinematics.ik import PinocchioIK

log = logging.getLogger("robot_stack.decoders.motion_tracks")

__all__ = [
    "DEFAULT_CAMERA_IDS",
    "PANDA_HAND_KEYPOINTS",
    "GripperKeypoints",
    "MotionTrackConfig",
    "MotionTrackDecoder",
    "MotionTracks",
    "TcpTrack",
]

#: The two views of the demo scene, in action-layout order.
DEFAULT_CAMERA_IDS: tuple[str, str] = ("front", "side")


# --------------------------------------------------------------------------------------- keypoint model


@dataclass(frozen=True)
class GripperKeypoints:
    """Canonical gripper keypoints: K >= 4 non-coplanar points fixed in the TCP frame.

    Attributes:
        names: K keypoint names, in track order.
        points_tcp: (K, 3) float64 metres in the TCP frame (``panda_hand_tcp``: origin between the fingertips,
            z out of the hand along the approach direction, y along the finger motion, x completing the frame).
    """

    names: tuple[str, ...]
    points_tcp: np.ndarray

    def __post_init__(self) -> None:
        pts = np.array(self.points_tcp, dtype=np.float64)
        names = tuple(self.names)
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 4 or not np.all(np.isfinite(pts)):
            raise ConfigError(f"GripperKeypoints: expected finite (K>=4, 3) points in metres, got {pts.shape}")
        if len(names) != pts.shape[0] or len(set(names)) != len(names):
            raise ConfigError(f"GripperKeypoints: need {pts.shape[0]} distinct names, got {names}")
        # non-coplanar: the centred point set must extend in all three directions (>= 5 mm RMS)
        spread = np.linalg.svd(pts - pts.mean(axis=0), compute_uv=False) / np.sqrt(pts.shape[0])
        if spread[-1] < 5e-3:
            raise ConfigError(
                f"GripperKeypoints: points are (nearly) coplanar (thinnest RMS extent {spread[-1] * 1e3:.2f} mm); "
                "the pose would be ill-conditioned. Add a keypoint off the plane."
            )
        pts.setflags(write=False)
        object.__setattr__(self, "points_tcp", pts)
        object.__setattr__(self, "names", names)

    @property
    def k(self) -> int:
        """Number of keypoints."""
        return int(self.points_tcp.shape[0])


def _panda_hand_keypoints() -> GripperKeypoints:
    # Franka hand (collision mesh of example-robot-data): in the hand frame the body spans x +-0.032, y +-0.10,
    # z -0.026..0.066 m; it is widest (x +-0.03) at the flange plate (z = 0) and narrower (x +-0.017) where the
    # fingers leave it (z = 0.062). The TCP is 0.1034 m below the flange along z.
    names, points = [], []
    for sx, fx in ((1, "front"), (-1, "back")):
        for sy, fy in ((1, "left"), (-1, "right")):
            names.append(f"flange_{fx}_{fy}")  # corner of the flange plate
            points.append((0.03 * sx, 0.088 * sy, -0.1034))
    for sx, fx in ((1, "front"), (-1, "back")):
        for sy, fy in ((1, "left"), (-1, "right")):
            names.append(f"finger_side_{fx}_{fy}")  # corner of the hand's finger side
            points.append((0.017 * sx, 0.097 * sy, -0.0414))
    names.append("grasp_center")  # between the fingertip pads = the TCP origin
    points.append((0.0, 0.0, 0.0))
    return GripperKeypoints(tuple(names), np.array(points))


#: The default keypoint model of the Panda hand: 4 corners of the flange plate, 4 corners of the hand's finger
#: side and the grasp centre between the fingertip pads (K = 9), TCP frame. None of them moves with the fingers.
PANDA_HAND_KEYPOINTS = _panda_hand_keypoints()


# ----------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MotionTrackConfig:
    """Thresholds of the track -> pose estimation (one place for defaults).

    Attributes:
        reprojection_threshold_px: a triangulated keypoint whose reprojection error exceeds this in either view
            (pixels, undistorted image) is an outlier.
        fit_threshold_m: a triangulated keypoint farther than this from the fitted model is an outlier, metres.
        min_inliers: fewer inlier keypoints at a step make the chunk undecodable (>= 3).
        min_depth_m: triangulated points closer than this to a camera plane (or behind it) are outliers, metres.
        refine: refine each pose by Gauss-Newton on the reprojection error (maximum likelihood).
        refine_iterations: Gauss-Newton iterations.
        max_subsets: 3-point hypotheses per step for the robust fit.
    """

    reprojection_threshold_px: float = 4.0
    fit_threshold_m: float = 0.01
    min_inliers: int = 4
    min_depth_m: float = 0.05
    refine: bool = True
    refine_iterations: int = 6
    max_subsets: int = 256

    def __post_init__(self) -> None:
        if not (self.reprojection_threshold_px > 0 and self.fit_threshold_m > 0 and self.min_depth_m >= 0):
            raise ConfigError("MotionTrackConfig: thresholds must be positive (min_depth_m >= 0)")
        if self.min_inliers < 3 or self.refine_iterations < 0 or self.max_subsets < 1:
            raise ConfigError("MotionTrackConfig: min_inliers >= 3, refine_iterations >= 0, max_subsets >= 1")


# ----------------------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class TcpTrack:
    """6-DoF TCP poses estimated from tracks, with per-keypoint diagnostics.

    Attributes:
        rotations: (H, 3, 3) float64, ``R_base_tcp`` per step.
        positions: (H, 3) float64 metres, TCP position in the base frame per step.
        inliers: (H, K) bool, keypoints used for the pose.
        reprojection_error_px: (H, K) float64, largest reprojection error of the triangulated keypoint over the
            views (NaN where it could not be triangulated in front of both cameras).
        fit_rms_m: (H,) float64 metres, RMS distance of the inlier points to the fitted (pre-refinement) model.
        gripper: (H,) float64 opening in [0, 1], or None.
    """

    rotations: np.ndarray
    positions: np.ndarray
    inliers: np.ndarray
    reprojection_error_px: np.ndarray
    fit_rms_m: np.ndarray
    gripper: np.ndarray | None = None

    @property
    def horizon(self) -> int:
        return int(self.positions.shape[0])

    def poses(self) -> tuple[Pose, ...]:
        """``T_base_tcp`` per step (parent ``"base"``, child ``"tcp"``)."""
        return tuple(Pose(r, p, "base", "tcp") for r, p in zip(self.rotations, self.positions, strict=True))


# ----------------------------------------------------------------------------------------------- core


class MotionTracks:
    """Two calibrated views + a gripper keypoint model: tracks <-> TCP poses.

    Args:
        calibrations: the two views' calibrations, in action-layout order.
        keypoints: the canonical keypoint model (default :data:`PANDA_HAND_KEYPOINTS`).
        config: estimation thresholds.
    """

    def __init__(
        self,
        calibrations: Sequence[CameraCalibration],
        keypoints: GripperKeypoints = PANDA_HAND_KEYPOINTS,
        config: MotionTrackConfig | None = None,
    ) -> None:
        cals = tuple(calibrations)
        if len(cals) != 2 or not all(isinstance(c, CameraCalibration) for c in cals):
            raise ConfigError(
                f"MotionTracks: expected exactly two CameraCalibration views, got {len(cals)}; motion tracks are "
                "triangulated from two calibrated cameras"
            )
        ids = tuple(c.camera_id for c in cals)
        if ids[0] == ids[1]:
            raise ConfigError(f"MotionTracks: the two views must be different cameras, got {ids}")
        baseline = float(np.linalg.norm(cals[0].T_base_cam.translation - cals[1].T_base_cam.translation))
        if baseline < 0.05:
            raise ConfigError(
                f"MotionTracks: cameras {ids} are {baseline * 1e3:.0f} mm apart; triangulation needs a baseline "
                "(>= 50 mm, ideally views 45-90 deg apart)"
            )
        self.calibrations = cals
        self.camera_ids: tuple[str, ...] = ids
        self.keypoints = keypoints
        self.config = config or MotionTrackConfig()
        self.views = tuple(ViewGeometry.from_pose(c.T_base_cam, c.camera.fx, c.camera.fy) for c in cals)

    @classmethod
    def from_store(
        cls,
        scene: str = "sim_tabletop",
        camera_ids: Sequence[str] = DEFAULT_CAMERA_IDS,
        root: str | None = None,
        keypoints: GripperKeypoints = PANDA_HAND_KEYPOINTS,
        config: MotionTrackConfig | None = None,
    ) -> MotionTracks:
        """Load the views' calibration files (``calibration/<scene>/<camera>.yaml``); CalibrationError if missing."""
        return cls([load_calibration(scene, cid, root) for cid in camera_ids], keypoints, config)

    @property
    def action_dim(self) -> int:
        """Columns of a ``motion_tracks`` action: views * keypoints * 2."""
        return len(self.views) * self.keypoints.k * 2

    # ----------------------------------------------------------------------------------------- layout
    def tracks_to_actions(self, tracks: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per-view (H, K, 2) pixel tracks -> (H, V*K*2) float32 actions (layout in the module docstring)."""
        arr = self._check_tracks(tracks)
        return np.ascontiguousarray(arr.reshape(arr.shape[0], -1), dtype=np.float32)

    def actions_to_tracks(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """(H, V*K*2) actions -> ``{camera_id: (H, K, 2) float64 pixels}``."""
        a = np.asarray(actions)
        if a.ndim != 2 or a.shape[1] != self.action_dim:
            raise ShapeError(
                f"motion_tracks actions: expected (horizon, {self.action_dim}) = (horizon, views {len(self.views)} "
                f"x keypoints {self.keypoints.k} x 2) pixels, got {a.shape}; check the model's action head"
            )
        v = a.reshape(a.shape[0], len(self.views), self.keypoints.k, 2).astype(np.float64)
        return {cid: v[:, i] for i, cid in enumerate(self.camera_ids)}

    def _check_tracks(self, tracks: Mapping[str, Any]) -> np.ndarray:
        """Validate and stack tracks to (H, V, K, 2) float64 pixels."""
        if not isinstance(tracks, Mapping):
            raise ShapeError(f"motion tracks: expected a mapping camera_id -> (H, K, 2) pixels, got {type(tracks)}")
        missing = [c for c in self.camera_ids if c not in tracks]
        unknown = [c for c in tracks if c not in self.camera_ids]
        if missing or unknown:
            raise ShapeError(
                f"motion tracks: views {list(tracks)} given, expected exactly {list(self.camera_ids)} (missing "
                f"{missing}, unknown {unknown}); send one (H, K, 2) track per calibrated view"
            )
        out = []
        for cid in self.camera_ids:
            try:
                t = np.asarray(tracks[cid], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ShapeError(f"motion tracks[{cid!r}]: not numeric ({exc})") from exc
            if t.ndim != 3 or t.shape[1:] != (self.keypoints.k, 2) or t.shape[0] < 1:
                raise ShapeError(
                    f"motion tracks[{cid!r}]: expected (horizon>=1, {self.keypoints.k}, 2) pixels (u, v), got {t.shape}"
                )
            if out and t.shape[0] != out[0].shape[0]:
                raise ShapeError(
                    f"motion tracks: views disagree on the horizon ({out[0].shape[0]} vs {t.shape[0]} steps)"
                )
            if not np.all(np.isfinite(t)):
                h, j = (int(i) for i in np.argwhere(~np.isfinite(t).all(axis=-1))[0])
                raise ShapeError(
                    f"motion tracks[{cid!r}]: step {h} keypoint {self.keypoints.names[j]!r} is NaN/Inf; every "
                    "keypoint needs a finite pixel position in every view"
                )
            out.append(t)
        return np.stack(out, axis=1)

    # ---------------------------------------------------------------------------------------- forward
    def project(self, rotations: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Forward model: TCP poses -> keypoint tracks in every view (the convention a track policy must follow).

        Args:
            rotations: (H, 3, 3) ``R_base_tcp``; positions: (H, 3) metres, base frame.

        Returns:
            ``{camera_id: (H, K, 2) float64 pixels (u, v) in the distorted image}``.

        Raises:
            DecodeError: a keypoint lies behind (or within ``min_depth_m`` of) a camera plane: such a pose has
                no track in that view.
        """
        r = np.asarray(rotations, np.float64)
        p = np.asarray(positions, np.float64)
        if r.ndim != 3 or r.shape[1:] != (3, 3) or p.shape != (r.shape[0], 3):
            raise ShapeError(f"project: expected rotations (H, 3, 3) and positions (H, 3), got {r.shape}, {p.shape}")
        pts = np.einsum("hij,kj->hki", r, self.keypoints.points_tcp) + p[:, None]
        out = {}
        for cid, view, cal in zip(self.camera_ids, self.views, self.calibrations, strict=True):
            pc = view.to_camera(pts)
            z = pc[..., 2]
            if np.any(~(z > self.config.min_depth_m)):
                h, j = (int(i) for i in np.argwhere(~(z > self.config.min_depth_m))[0])
                raise DecodeError(
                    f"project: keypoint {self.keypoints.names[j]!r} at step {h} is {z[h, j]:.3f} m in front of "
                    f"camera {cid!r} (needs > {self.config.min_depth_m} m): the pose is behind that camera and "
                    "has no track there"
                )
            cam = cal.camera
            xd, yd = distort_normalized(pc[..., 0] / z, pc[..., 1] / z, cam.distortion)
            out[cid] = np.stack([cam.fx * xd + cam.cx, cam.fy * yd + cam.cy], axis=-1)
        return out

    def project_poses(self, poses: Sequence[Pose]) -> dict[str, np.ndarray]:
        """:meth:`project` for a sequence of ``T_base_tcp`` poses."""
        if len(poses) == 0:
            raise ShapeError("project_poses: no poses given")
        return self.project(np.stack([p.rotation for p in poses]), np.stack([p.translation for p in poses]))

    # --------------------------------------------------------------------------------------- inverse
    def _normalise(self, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, V, K, 2) pixels -> undistorted normalised coordinates and a (H, V, K) validity mask."""
        out = np.empty_like(px)
        ok = np.ones(px.shape[:-1], dtype=bool)
        for i, cal in enumerate(self.calibrations):
            cam = cal.camera
            xd = (px[:, i, :, 0] - cam.cx) / cam.fx
            yd = (px[:, i, :, 1] - cam.cy) / cam.fy
            if np.any(cam.distortion != 0.0):
                x, y, residual = undistort_normalized(xd, yd, cam.distortion)
                ok[:, i] = residual < 1e-9
            else:
                x, y = xd, yd
            out[:, i, :, 0], out[:, i, :, 1] = x, y
        return out, ok

    def estimate(self, tracks: Mapping[str, np.ndarray], gripper: np.ndarray | None = None) -> TcpTrack:
        """Tracks -> TCP poses (steps 1-4 of the module docstring).

        Args:
            tracks: ``{camera_id: (H, K, 2) pixels}`` for exactly the calibrated views; finite.
            gripper: optional (H,) opening in [0, 1] passed through (clipped).

        Raises:
            ShapeError: missing/unknown view, wrong shape, NaN/Inf.
            DecodeError: at some step fewer than ``min_inliers`` keypoints survive the checks (the message gives
                the step and how many were behind a camera / failed reprojection / failed the rigid fit).
        """
        px = self._check_tracks(tracks)
        h, v, k, _ = px.shape
        cfg = self.config
        norm, ok = self._normalise(px)
        x1 = norm[:, 0].reshape(-1, 2)
        x2 = norm[:, 1].reshape(-1, 2)
        hom = triangulate(self.views[0].projection, self.views[1].projection, x1, x2)
        w = hom[:, 3]
        finite_w = np.abs(w) > 1e-12
        pts = np.where(finite_w[:, None], hom[:, :3] / np.where(finite_w, w, 1.0)[:, None], np.nan).reshape(h, k, 3)
        valid = ok.all(axis=1) & finite_w.reshape(h, k)
        in_front = np.ones((h, k), dtype=bool)
        reproj = np.zeros((h, k))
        for i, view in enumerate(self.views):
            pc = view.to_camera(pts)
            z = pc[..., 2]
            front = z > cfg.min_depth_m
            in_front &= front
            zs = np.where(front, z, 1.0)
            err = (pc[..., :2] / zs[..., None] - norm[:, i]) * view.focal_px
            reproj = np.maximum(reproj, np.linalg.norm(err, axis=-1))
        valid &= in_front
        reproj = np.where(valid, reproj, np.nan)
        reproj_ok = valid & (reproj <= cfg.reprojection_threshold_px)
        fit = robust_rigid_fit(self.keypoints.points_tcp, pts, reproj_ok, cfg.fit_threshold_m, cfg.max_subsets)
        n_inl = fit.inliers.sum(axis=1)
        bad = np.flatnonzero(n_inl < cfg.min_inliers)
        if bad.size:
            s = int(bad[0])
            raise DecodeError(
                f"motion_tracks step {s}/{h}: only {int(n_inl[s])} of {k} keypoints are consistent (need "
                f"{cfg.min_inliers}): {int((~in_front[s]).sum())} triangulate behind a camera or at infinity, "
                f"{int((valid[s] & ~reproj_ok[s]).sum())} exceed the {cfg.reprojection_threshold_px} px "
                f"reprojection threshold, {int((reproj_ok[s] & ~fit.inliers[s]).sum())} do not fit the gripper "
                f"model within {cfg.fit_threshold_m * 1e3:.0f} mm. The tracks do not describe one rigid gripper "
                "seen by these two calibrated cameras: check the camera order and calibration of the model."
            )
        rot, pos = fit.rotation, fit.translation
        if cfg.refine and cfg.refine_iterations > 0:
            weights = np.broadcast_to(fit.inliers[:, None, :], (h, v, k)).astype(np.float64)
            rot, pos = refine_pose_reprojection(
                rot, pos, self.keypoints.points_tcp, self.views, norm, weights, cfg.refine_iterations
            )
        grip = None
        if gripper is not None:
            g = np.asarray(gripper, dtype=np.float64)
            if g.shape != (h,) or not np.all(np.isfinite(g)):
                raise ShapeError(f"motion_tracks gripper: expected finite ({h},) openings in [0, 1], got {g.shape}")
            grip = np.clip(g, 0.0, 1.0)
        n_out = int(k * h - n_inl.sum())
        if n_out:
            log.debug("motion_tracks: %d of %d keypoint observations rejected as outliers", n_out, k * h)
        return TcpTrack(rot, pos, fit.inliers, reproj, fit.rms_m, grip)


# ---------------------------------------------------------------------------------------------- decoder


class MotionTrackDecoder(Decoder):
    """Decode ``motion_tracks`` chunks: tracks -> TCP poses (:class:`MotionTracks`) -> IK -> joint trajectory.

    Args:
        tracks: the calibrated two-view model; default ``MotionTracks.from_store(scene, camera_ids)``.
        ik: arm kinematics (default :func:`~robot_stack.kinematics.ik.panda_ik`).
        latency_offset_s: added to every step time (``t = t_obs + latency_offset + k * dt``), seconds.
        max_iters: IK iterations per step (warm-started from the previous step).
        scene, camera_ids, calibration_root: where to load the calibrations when ``tracks`` is None.
        config: estimation thresholds when ``tracks`` is None.
    """

    action_space = "motion_tracks"

    def __init__(
        self,
        tracks: MotionTracks | None = None,
        ik: PinocchioIK | None = None,
        latency_offset_s: float = 0.0,
        max_iters: int = 50,
        scene: str = "sim_tabletop",
        camera_ids: Sequence[str] = DEFAULT_CAMERA_IDS,
        calibration_root: str | None = None,
        config: MotionTrackConfig | None = None,
    ) -> None:
        if ik is None:
            from robot_stack.kinematics.ik import panda_ik

            ik = panda_ik()
        self.ik = ik
        self.tracks = tracks or MotionTracks.from_store(scene, camera_ids, calibration_root, config=config)
        self.latency_offset_ns = round(latency_offset_s * 1e9)
        self.max_iters = int(max_iters)
        self.last_track: TcpTrack | None = None
        self._lock = threading.Lock()
        self._counts = {"chunks": 0, "failed": 0, "outlier_keypoints": 0}

    def stats(self) -> dict[str, int]:
        """Counters: chunks decoded, failed, keypoint observations rejected as outliers."""
        with self._lock:
            return dict(self._counts)

    def decode_tracks(
        self,
        tracks: Mapping[str, np.ndarray],
        state: RobotState,
        t_obs_ns: int,
        dt_s: float,
        gripper: np.ndarray | None = None,
    ) -> JointTrajectory:
        """Tracks ``{camera_id: (H, K, 2) pixels}`` observed at ``t_obs_ns`` with step ``dt_s`` -> joints.

        Raises ShapeError (bad input), DecodeError (inconsistent tracks), IKError (unreachable pose).
        """
        if not (isinstance(dt_s, int | float) and dt_s > 0 and np.isfinite(dt_s)):
            raise ShapeError(f"motion_tracks: dt_s must be a positive number of seconds, got {dt_s!r}")
        try:
            track = self.tracks.estimate(tracks, gripper)
            positions = solve_pose_sequence(self.ik, track.poses(), state.q, self.max_iters, "motion_tracks")
        except Exception:
            with self._lock:
                self._counts["failed"] += 1
            raise
        with self._lock:
            self._counts["chunks"] += 1
            self._counts["outlier_keypoints"] += int((~track.inliers).sum())
        self.last_track = track
        t_ns = int(t_obs_ns) + self.latency_offset_ns + np.round(np.arange(track.horizon) * dt_s * 1e9).astype(np.int64)
        try:
            return JointTrajectory(self.ik.joint_names, t_ns, positions, track.gripper)
        except ShapeError as exc:
            raise DecodeError(f"motion_tracks: could not build the trajectory: {exc}") from exc

    def decode(self, chunk: ActionChunk, state: RobotState) -> JointTrajectory:
        self._check_space(chunk)
        tracks = self.tracks.actions_to_tracks(chunk.actions)
        return self.decode_tracks(tracks, state, chunk.t_obs_ns, chunk.dt_s, chunk.gripper)
