"""Hand-eye calibration (eye-to-hand and eye-in-hand) with OpenCV, outlier rejection and reprojection refinement.

Both set-ups are one equation. With ``C_i = T_cam_board`` measured for robot pose ``i``::

    C_i = X^-1 @ M_i @ Y

* eye-to-hand (camera fixed, board on the gripper): ``M_i = T_base_gripper``, ``X = T_base_cam``,
  ``Y = T_gripper_board``;
* eye-in-hand (camera on the gripper, board fixed): ``M_i = T_gripper_base``, ``X = T_gripper_cam``,
  ``Y = T_base_board``.

Methods: the five ``cv2.calibrateHandEye`` solvers (``tsai``, ``park``, ``horaud``, ``andreff``, ``daniilidis``)
and the two ``cv2.calibrateRobotWorldHandEye`` solvers (``shah``, ``li``), which estimate X and Y jointly.

**Outliers** (a station whose robot pose was read at the wrong moment, a board that slipped) are found without
letting them spoil the fit that judges them. With board detections and intrinsics (the real case), X and Y are
fitted to the corner reprojection error of *every* station with robust losses that fade out whole stations that
disagree (soft-L1 from the closed-form start, then Cauchy at half the inlier threshold: iteratively reweighted
least squares); a station is an inlier when its reprojection RMS under that fit is within a threshold fixed before
any fit (:func:`inlier_threshold_px`: 3x the corner noise measured by the stations' own board-pose fits, at least
1 px). Without detections, closed-form solutions of random 4-station subsets (MSAC, adaptive number of trials,
seeded) are scored on every station's pose residual instead. Then the inliers are solved again, X and Y refined
jointly on their corner reprojection error (Levenberg-Marquardt, Huber loss: the maximum-likelihood estimate
under pixel noise), and every station re-classified under the result until the set is stable.

The result carries its reprojection RMS over the inliers; :func:`check_reprojection_gate` refuses a calibration
above a gate (``robot-stack calibrate hand-eye --write`` saves nothing above 1 px without ``--accept-rms-px``).

Before anything is solved the robot poses are checked: the relative rotations must turn about at least two
well-separated axes, otherwise the translation along the common axis is unobservable and the result is garbage;
that is a :class:`~robot_stack.errors.CalibrationError` saying how to fix the pose set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from robot_stack.calibration.charuco import BoardDetection
from robot_stack.calibration.projection import project_points
from robot_stack.errors import CalibrationError
from robot_stack.geometry import so3_exp
from robot_stack.types import CameraModel, Pose

__all__ = [
    "HAND_EYE_METHODS",
    "REPROJECTION_GATE_PX",
    "HandEyeResult",
    "HandEyeSample",
    "calibrate_hand_eye",
    "check_pose_diversity",
    "check_reprojection_gate",
    "inlier_threshold_px",
]

log = logging.getLogger("robot_stack.calibration.handeye")

HAND_EYE_METHODS = ("tsai", "park", "horaud", "andreff", "daniilidis", "shah", "li")
MODES = ("eye_to_hand", "eye_in_hand")
#: Default gate on a calibration's reprojection RMS over its inlier stations, pixels (see the CLI's --write).
REPROJECTION_GATE_PX = 1.0
#: Stations per consensus hypothesis (the closed-form solvers need 3; 4 keeps a hypothesis well conditioned).
_SUBSET = 4


@dataclass(frozen=True)
class HandEyeSample:
    """One station of the robot.

    Attributes:
        T_base_gripper: gripper (TCP/flange) pose in the robot base frame, from the robot's forward kinematics.
        T_cam_board: board pose in the camera's optical frame (e.g. :func:`~robot_stack.calibration.charuco.
            board_pose`).
        detection: the corners behind ``T_cam_board`` (enables the reprojection refinement), or None.
    """

    T_base_gripper: Pose
    T_cam_board: Pose
    detection: BoardDetection | None = None


@dataclass(frozen=True)
class HandEyeResult:
    """Outcome of :func:`calibrate_hand_eye`.

    Attributes:
        mode: ``"eye_to_hand"`` or ``"eye_in_hand"``; method: the solver used (plus ``"+refine"``).
        X: ``T_base_cam`` (eye-to-hand) or ``T_gripper_cam`` (eye-in-hand), optical camera frame.
        Y: ``T_gripper_board`` (eye-to-hand) or ``T_base_board`` (eye-in-hand).
        translation_rms_m, rotation_rms_rad: RMS of ``C_i`` vs ``X^-1 M_i Y`` over the inliers.
        reprojection_rms_px: RMS corner reprojection error over the inliers (NaN without detections/intrinsics).
        n_samples: samples given; rejected: indices of samples rejected as outliers.
        station_reprojection_px: per sample (all, rejected included), RMS reprojection error of its corners under
            the result, pixels (empty without detections/intrinsics).
        corner_noise_px: corner noise measured by the stations' own board-pose fits (median RMS), pixels (NaN
            without detections); inlier_threshold_px: the station residual above which a station is an outlier.
    """

    mode: str
    method: str
    X: Pose
    Y: Pose
    translation_rms_m: float
    rotation_rms_rad: float
    reprojection_rms_px: float
    n_samples: int
    rejected: tuple[int, ...]
    station_reprojection_px: tuple[float, ...] = ()
    corner_noise_px: float = float("nan")
    inlier_threshold_px: float = float("nan")

    @property
    def T_base_cam(self) -> Pose:  # noqa: N802 - house name of a pose
        if self.mode != "eye_to_hand":
            raise CalibrationError(
                "T_base_cam of an eye-in-hand camera depends on the robot pose; use X (T_gripper_cam)"
            )
        return self.X

    def residuals(self) -> dict[str, float]:
        """Health figures for the calibration file."""
        return {
            "translation_rms_mm": round(self.translation_rms_m * 1e3, 4),
            "rotation_rms_deg": round(float(np.rad2deg(self.rotation_rms_rad)), 5),
            "reprojection_rms_px": round(self.reprojection_rms_px, 4),
            "corner_noise_px": round(self.corner_noise_px, 4),
            "n_samples": float(self.n_samples),
            "n_rejected": float(len(self.rejected)),
        }


def check_reprojection_gate(result: HandEyeResult, max_rms_px: float = REPROJECTION_GATE_PX, flag: str = "") -> None:
    """Refuse a calibration whose reprojection RMS over its inliers exceeds ``max_rms_px`` (or is unknown).

    Args:
        flag: the command-line override to name in the message (e.g. ``"--accept-rms-px"``).

    Raises:
        CalibrationError: what was measured, what is accepted, and how to fix or override it.
    """
    rms = result.reprojection_rms_px
    if np.isfinite(rms) and rms <= max_rms_px:
        return
    override = f"; to save it anyway pass {flag} {max(rms, max_rms_px) + 0.05:.2f}" if flag else ""
    measured = (
        f"reprojection RMS {rms:.2f} px over {result.n_samples - len(result.rejected)} inlier stations"
        if np.isfinite(rms)
        else "no reprojection RMS (no board detections or intrinsics)"
    )
    raise CalibrationError(
        f"hand-eye calibration refused: {measured} (gate {max_rms_px:.2f} px; corner noise "
        f"{result.corner_noise_px:.2f} px, {len(result.rejected)} of {result.n_samples} stations rejected "
        f"{list(result.rejected)}). A good calibration reprojects within about twice the corner noise: check that "
        "the board is rigid and fixed, that robot poses are read when the arm is at rest, and the intrinsics; then "
        f"collect the stations again{override}"
    )


# ----------------------------------------------------------------------------------------------- helpers


def _rotvec(rotation: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(rotation).as_rotvec()


def _mean_pose(poses: Sequence[Pose], parent: str, child: str) -> Pose:
    """Chordal mean rotation (SVD projection of the summed matrices) and mean translation."""
    u, _, vt = np.linalg.svd(sum(p.rotation for p in poses))
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return Pose(r, np.mean([p.translation for p in poses], axis=0), parent, child)


def _motions(samples: Sequence[HandEyeSample], mode: str) -> list[Pose]:
    if mode == "eye_to_hand":
        return [Pose(s.T_base_gripper.rotation, s.T_base_gripper.translation) for s in samples]
    return [Pose(s.T_base_gripper.rotation, s.T_base_gripper.translation).inverse() for s in samples]


def _plain(p: Pose) -> Pose:
    return Pose(p.rotation, p.translation)


def check_pose_diversity(
    gripper_poses: Sequence[Pose], min_rotation_deg: float = 10.0, min_axis_spread: float = 0.15
) -> None:
    """Refuse pose sets that cannot determine a hand-eye transform.

    The rotations of every pose relative to the first are taken as axis * angle vectors (in the first gripper
    frame); their spread is the ratio of the second to the first singular value of the stacked unit axes of the
    rotations larger than ``min_rotation_deg / 2``.

    Raises:
        CalibrationError: fewer than 3 poses, rotations below ``min_rotation_deg``, or all rotation axes (nearly)
            parallel (``spread < min_axis_spread``), with what to change.
    """
    if len(gripper_poses) < 3:
        raise CalibrationError(f"hand-eye needs at least 3 robot poses (better 10-20), got {len(gripper_poses)}")
    r0 = gripper_poses[0].rotation
    vecs = np.array([_rotvec(r0.T @ p.rotation) for p in gripper_poses[1:]])
    angles = np.linalg.norm(vecs, axis=1)
    if np.rad2deg(angles.max()) < min_rotation_deg:
        raise CalibrationError(
            f"degenerate hand-eye pose set: the gripper rotates at most {np.rad2deg(angles.max()):.1f} deg between "
            f"poses; tilt it by >= {min_rotation_deg:g} deg (ideally 20-40 deg) about different axes"
        )
    big = angles > np.deg2rad(min_rotation_deg / 2)
    axes = vecs[big] / angles[big, None]
    s = np.linalg.svd(axes, compute_uv=False) if len(axes) >= 2 else np.array([1.0, 0.0])
    spread = float(s[1] / s[0]) if s[0] > 0 else 0.0
    if spread < min_axis_spread:
        axis = axes[0] if len(axes) else np.zeros(3)
        raise CalibrationError(
            f"degenerate hand-eye pose set: all gripper rotations are about one axis (~{np.round(axis, 2).tolist()} in "
            f"the gripper frame, axis spread {spread:.3f} < {min_axis_spread}); the translation along that axis "
            "cannot be determined. Add poses that rotate the gripper about at least two different axes "
            "(e.g. tilt as well as turn the wrist)."
        )


# ------------------------------------------------------------------------------------------------ solve


def _closed_form(motions: list[Pose], cams: list[Pose], method: str) -> tuple[Pose, Pose]:
    import cv2

    if method in ("shah", "li"):
        flag = cv2.CALIB_ROBOT_WORLD_HAND_EYE_SHAH if method == "shah" else cv2.CALIB_ROBOT_WORLD_HAND_EYE_LI
        r_b2w, t_b2w, r_g2c, t_g2c = cv2.calibrateRobotWorldHandEye(
            [c.rotation for c in cams],
            [c.translation.reshape(3, 1) for c in cams],
            [m.rotation for m in motions],
            [m.translation.reshape(3, 1) for m in motions],
            method=flag,
        )
        y = Pose(r_b2w, np.asarray(t_b2w).reshape(3)).inverse()
        x = Pose(r_g2c, np.asarray(t_g2c).reshape(3)).inverse()
        return x, y
    flag = getattr(cv2, f"CALIB_HAND_EYE_{method.upper()}")
    inv = [m.inverse() for m in motions]
    r_x, t_x = cv2.calibrateHandEye(
        [m.rotation for m in inv],
        [m.translation.reshape(3, 1) for m in inv],
        [c.rotation for c in cams],
        [c.translation.reshape(3, 1) for c in cams],
        method=flag,
    )
    x = Pose(r_x, np.asarray(t_x).reshape(3))
    y = _mean_pose([m.inverse() @ x @ c for m, c in zip(motions, cams, strict=True)], "", "")
    return x, y


def _pose_residuals(x: Pose, y: Pose, motions: list[Pose], cams: list[Pose]) -> tuple[np.ndarray, np.ndarray]:
    """Per sample (translation m, rotation rad) of C_i against X^-1 M_i Y."""
    xi = x.inverse()
    errs = np.array([(xi @ m @ y).distance_to(c) for m, c in zip(motions, cams, strict=True)])
    return errs[:, 0], errs[:, 1]


@dataclass(frozen=True)
class _Corners:
    """Every corner of some stations, stacked for vectorised projection.

    Attributes:
        station: (P,) index of each corner's station (0..n-1 within this set); n: stations.
        obj: (P, 3) board points, m; img: (P, 2) detected pixels; rm, tm: (P, 3, 3), (P, 3) motion ``M_i`` of
            each corner's station.
    """

    station: np.ndarray
    n: int
    obj: np.ndarray
    img: np.ndarray
    rm: np.ndarray
    tm: np.ndarray

    @classmethod
    def of(cls, motions: Sequence[Pose], samples: Sequence[HandEyeSample]) -> _Corners:
        dets = [s.detection for s in samples]
        assert all(d is not None for d in dets)
        counts = [len(d.ids) for d in dets]  # type: ignore[union-attr]
        station = np.repeat(np.arange(len(samples)), counts)
        return cls(
            station,
            len(samples),
            np.concatenate([d.object_points for d in dets]),  # type: ignore[union-attr]
            np.concatenate([d.image_points for d in dets]),  # type: ignore[union-attr]
            np.stack([m.rotation for m in motions])[station],
            np.stack([m.translation for m in motions])[station],
        )

    def residuals(
        self, rx: np.ndarray, tx: np.ndarray, ry: np.ndarray, ty: np.ndarray, camera: CameraModel
    ) -> np.ndarray:
        """(P, 2) projected minus detected pixels under ``X = (rx, tx)``, ``Y = (ry, ty)``: board -> (gripper |
        base) by Y, -> (base | gripper) by M_i, -> camera by X^-1."""
        pts = self.obj @ ry.T + ty
        pts = np.einsum("pij,pj->pi", self.rm, pts) + self.tm
        return project_points((pts - tx) @ rx, camera) - self.img

    def station_rms(self, x: Pose, y: Pose, camera: CameraModel) -> np.ndarray:
        """(n,) RMS reprojection error of each station's corners, pixels."""
        sq = np.sum(self.residuals(x.rotation, x.translation, y.rotation, y.translation, camera) ** 2, axis=1)
        return np.sqrt(np.bincount(self.station, sq, self.n) / np.bincount(self.station, minlength=self.n))

    def subset(self, keep: np.ndarray) -> _Corners:
        """The corners of stations ``keep`` (renumbered 0..len(keep)-1)."""
        renumber = np.full(self.n, -1)
        renumber[keep] = np.arange(len(keep))
        mask = renumber[self.station] >= 0
        return _Corners(
            renumber[self.station[mask]], len(keep), self.obj[mask], self.img[mask], self.rm[mask], self.tm[mask]
        )


def _pnp_rms(sample: HandEyeSample, camera: CameraModel) -> float:
    """RMS of a station's corners against its own board pose, pixels: the corner noise the station carries."""
    det = sample.detection
    assert det is not None
    c = sample.T_cam_board
    uv = project_points(det.object_points @ c.rotation.T + c.translation, camera)
    return float(np.sqrt(np.mean(np.sum((uv - det.image_points) ** 2, axis=1))))


def inlier_threshold_px(corner_noise_px: float, sigmas: float = 3.0, floor_px: float = 1.0) -> float:
    """Station reprojection RMS above which a station is an outlier: ``sigmas`` x the corner noise, at least
    ``floor_px``. A station's own RMS under the true transforms is about the corner noise; a robot pose 5 mm or
    1 deg off moves a board 1 m from a 900 px camera by several pixels (unless the error lies along the line of
    sight, where it also does little harm)."""
    return max(floor_px, sigmas * corner_noise_px)


def _refine(
    x: Pose, y: Pose, corners: _Corners, camera: CameraModel, loss: str = "huber", f_scale: float = 1.0
) -> tuple[Pose, Pose, float]:
    """Joint Levenberg-Marquardt (trust region) refinement of X and Y on the corner reprojection error with a
    robust ``loss`` of scale ``f_scale`` pixels; returns (X, Y, RMS over the corners, px)."""
    from scipy.optimize import least_squares
    from threadpoolctl import threadpool_limits

    def unpack(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return so3_exp(p[0:3]), p[3:6], so3_exp(p[6:9]), p[9:12]

    def residual(p: np.ndarray) -> np.ndarray:
        return corners.residuals(*unpack(p), camera).ravel()

    p0 = np.concatenate([_rotvec(x.rotation), x.translation, _rotvec(y.rotation), y.translation])
    with threadpool_limits(1):  # a 12-column problem: BLAS threads only contend (3x slower on a busy 2-core PC)
        sol = least_squares(residual, p0, loss=loss, f_scale=f_scale, x_scale="jac", method="trf")
    rx, tx, ry, ty = unpack(sol.x)
    r = residual(sol.x).reshape(-1, 2)
    return Pose(rx, tx), Pose(ry, ty), float(np.sqrt(np.mean(np.sum(r**2, axis=1))))


def _consensus(
    motions: list[Pose],
    cams: list[Pose],
    method: str,
    score: Callable[[Pose, Pose], np.ndarray],
    rng: np.random.Generator,
    max_trials: int,
    confidence: float = 0.999,
) -> np.ndarray:
    """Indices of the largest consistent station set: MSAC over closed-form solutions of random 4-station
    subsets, each scored by ``score(X, Y)`` = per-station residuals in threshold units (<= 1: inlier)."""
    import cv2

    n = len(motions)
    if n <= _SUBSET:
        return np.arange(n)
    best_cost = np.inf
    best: np.ndarray | None = None
    trials, needed = 0, max_trials
    while trials < min(needed, max_trials):
        trials += 1
        subset = rng.choice(n, _SUBSET, replace=False)
        try:
            check_pose_diversity([motions[i] for i in subset])
            x, y = _closed_form([motions[i] for i in subset], [cams[i] for i in subset], method)
        except (CalibrationError, ValueError, np.linalg.LinAlgError, cv2.error):
            continue  # a degenerate or ill-conditioned subset: draw another
        r = score(x, y)
        if not np.all(np.isfinite(r)):
            continue
        cost = float(np.sum(np.minimum(r, 1.0) ** 2))  # MSAC: inliers by fit, outliers a constant
        if cost < best_cost:
            best_cost, best = cost, np.flatnonzero(r <= 1.0)
            p_clean = (len(best) / n) ** _SUBSET  # -> trials for `confidence` of one all-inlier subset
            needed = int(np.ceil(np.log(1 - confidence) / np.log(1 - p_clean))) if 0 < p_clean < 1 else trials
    if best is None:
        raise CalibrationError(
            "hand-eye: no subset of 4 stations gave a usable solution; the robot poses do not rotate about "
            "different axes enough (see check_pose_diversity)"
        )
    return best


def _robust_pixel_start(
    motions: list[Pose], cams: list[Pose], corners: _Corners, camera: CameraModel, method: str, threshold_px: float
) -> tuple[Pose, Pose]:
    """X, Y close to the inliers' solution although outlier stations are present: the closed form on every
    station (biased by the outliers), then reprojection refinement with a soft-L1 loss (10 px: robust to the
    start's error) and a Cauchy loss (half the inlier threshold: an outlier station's corners lose their pull)."""
    x, y = _closed_form(motions, cams, method)
    x, y, _ = _refine(x, y, corners, camera, "soft_l1", 10.0)
    x, y, _ = _refine(x, y, corners, camera, "cauchy", threshold_px / 2)
    return x, y


def calibrate_hand_eye(
    samples: Sequence[HandEyeSample],
    mode: str = "eye_to_hand",
    method: str = "park",
    camera: CameraModel | None = None,
    refine: bool = True,
    inlier_sigmas: float = 3.0,
    min_inlier_px: float = 1.0,
    min_outlier_m: float = 0.002,
    min_outlier_rad: float = float(np.deg2rad(0.3)),
    max_trials: int = 300,
    seed: int = 0,
) -> HandEyeResult:
    """Solve ``C_i = X^-1 M_i Y`` robustly (see module docstring).

    With detections and ``camera``, stations are judged by their reprojection RMS (threshold
    :func:`inlier_threshold_px` of the measured corner noise) after a robust reprojection fit; without, by their
    pose residuals (``min_outlier_m`` / ``min_outlier_rad``) in a consensus over random 4-station subsets.

    Args:
        samples: robot pose + board pose per station (>= 3; 15-20 diverse poses recommended).
        mode: ``"eye_to_hand"`` or ``"eye_in_hand"``.
        method: one of :data:`HAND_EYE_METHODS` (the closed-form solver).
        camera: intrinsics of the images; with detections it enables pixel residuals and the refinement.
        refine: refine X and Y jointly on the inliers' corner reprojection error (needs ``camera`` and
            detections); without it the closed form on the inliers is returned.
        inlier_sigmas, min_inlier_px: the pixel threshold, see :func:`inlier_threshold_px`.
        min_outlier_m, min_outlier_rad: without detections, a station is an outlier when its pose residual
            exceeds either.
        max_trials: most consensus hypotheses (pose residuals); seed: their random subsets (reproducible).

    Raises:
        CalibrationError: unknown mode/method, degenerate pose set, or fewer than 3 consistent stations.
    """
    if mode not in MODES:
        raise CalibrationError(f"hand-eye mode {mode!r} unknown; use one of {MODES}")
    if method not in HAND_EYE_METHODS:
        raise CalibrationError(f"hand-eye method {method!r} unknown; use one of {HAND_EYE_METHODS}")
    samples = list(samples)
    check_pose_diversity([s.T_base_gripper for s in samples])
    motions = _motions(samples, mode)
    cams = [_plain(s.T_cam_board) for s in samples]
    pixels = camera is not None and all(s.detection is not None for s in samples)
    noise_px = threshold_px = float("nan")
    if pixels:
        assert camera is not None
        corners = _Corners.of(motions, samples)
        noise_px = float(np.median([_pnp_rms(s, camera) for s in samples]))
        threshold_px = inlier_threshold_px(noise_px, inlier_sigmas, min_inlier_px)

        def score(x: Pose, y: Pose) -> np.ndarray:
            return corners.station_rms(x, y, camera) / threshold_px  # type: ignore[arg-type]

        x, y = _robust_pixel_start(motions, cams, corners, camera, method, threshold_px)
        keep = np.flatnonzero(score(x, y) <= 1.0)
    else:

        def score(x: Pose, y: Pose) -> np.ndarray:
            dt, dr = _pose_residuals(x, y, motions, cams)
            return np.maximum(dt / min_outlier_m, dr / min_outlier_rad)

        keep = _consensus(motions, cams, method, score, np.random.default_rng(seed), max_trials)
    used = method
    for _ in range(5):  # solve on the inliers, re-classify every station under the result, until stable
        if len(keep) < 3:
            raise CalibrationError(
                f"hand-eye: only {len(keep)} of {len(samples)} stations agree with each other; check that the board "
                "is rigidly mounted, the robot poses are read at the moment of capture, and the intrinsics are right"
            )
        check_pose_diversity([samples[i].T_base_gripper for i in keep])
        x, y = _closed_form([motions[i] for i in keep], [cams[i] for i in keep], method)
        if refine and pixels:
            assert camera is not None
            x, y, _ = _refine(x, y, corners.subset(keep), camera)
            used = f"{method}+refine"
        new_keep = np.flatnonzero(score(x, y) <= 1.0)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    if refine and not pixels:
        log.info("hand-eye: reprojection refinement skipped (needs camera intrinsics and board detections)")
    stations: tuple[float, ...] = ()
    reproj = float("nan")
    if pixels:
        assert camera is not None
        per_station = corners.station_rms(x, y, camera)
        stations = tuple(float(v) for v in per_station)
        reproj = float(np.sqrt(np.mean(per_station[keep] ** 2)))
    rejected = tuple(int(i) for i in sorted(set(range(len(samples))) - set(keep.tolist())))
    if rejected:
        log.warning(
            "hand-eye: rejected %d outlier station(s) %s%s",
            len(rejected),
            list(rejected),
            f" (reprojection {[round(stations[i], 1) for i in rejected]} px, threshold {threshold_px:.2f} px)"
            if pixels
            else " (pose residuals above the outlier floors)",
        )
    dt, dr = _pose_residuals(x, y, [motions[i] for i in keep], [cams[i] for i in keep])
    names = ("base", "gripper", "board") if mode == "eye_to_hand" else ("gripper", "base", "board")
    return HandEyeResult(
        mode=mode,
        method=used,
        X=Pose(x.rotation, x.translation, names[0], "camera"),
        Y=Pose(y.rotation, y.translation, names[1], "board"),
        translation_rms_m=float(np.sqrt(np.mean(dt**2))),
        rotation_rms_rad=float(np.sqrt(np.mean(dr**2))),
        reprojection_rms_px=reproj,
        n_samples=len(samples),
        rejected=rejected,
        station_reprojection_px=stations,
        corner_noise_px=noise_px,
        inlier_threshold_px=threshold_px,
    )
