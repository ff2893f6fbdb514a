"""Hand-eye calibration (eye-to-hand and eye-in-hand) with OpenCV, outlier rejection and reprojection refinement.

Both set-ups are one equation. With ``C_i = T_cam_board`` measured for robot pose ``i``::

    C_i = X^-1 @ M_i @ Y

* eye-to-hand (camera fixed, board on the gripper): ``M_i = T_base_gripper``, ``X = T_base_cam``,
  ``Y = T_gripper_board``;
* eye-in-hand (camera on the gripper, board fixed): ``M_i = T_gripper_base``, ``X = T_gripper_cam``,
  ``Y = T_base_board``.

Methods: the five ``cv2.calibrateHandEye`` solvers (``tsai``, ``park``, ``horaud``, ``andreff``, ``daniilidis``)
and the two ``cv2.calibrateRobotWorldHandEye`` solvers (``shah``, ``li``), which estimate X and Y jointly.
After the closed-form solve, samples whose pose residual is far above the others (MAD rule) are rejected and the
solve repeated; then, when board detections are available, X and Y are refined jointly by minimising the corner
reprojection error over every view (Levenberg-Marquardt with a robust loss), the maximum-likelihood estimate under
pixel noise.

Before anything is solved the robot poses are checked: the relative rotations must turn about at least two
well-separated axes, otherwise the translation along the common axis is unobservable and the result is garbage;
that is a :class:`~robot_stack.errors.CalibrationError` saying how to fix the pose set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robot_stack.calibration.charuco import BoardDetection
from robot_stack.errors import CalibrationError
from robot_stack.geometry import so3_exp
from robot_stack.types import CameraModel, Pose

__all__ = [
    "HAND_EYE_METHODS",
    "HandEyeResult",
    "HandEyeSample",
    "calibrate_hand_eye",
    "check_pose_diversity",
]

log = logging.getLogger("robot_stack.calibration.handeye")

HAND_EYE_METHODS = ("tsai", "park", "horaud", "andreff", "daniilidis", "shah", "li")
MODES = ("eye_to_hand", "eye_in_hand")


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
        reprojection_rms_px: RMS corner reprojection error over the inliers (NaN without detections).
        n_samples: samples given; rejected: indices of samples rejected as outliers.
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
            "n_samples": float(self.n_samples),
            "n_rejected": float(len(self.rejected)),
        }


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


def _project(points_cam: np.ndarray, camera: CameraModel) -> np.ndarray:
    import cv2

    uv, _ = cv2.projectPoints(points_cam.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), camera.K, camera.distortion)
    return uv.reshape(-1, 2)


def _refine(
    x: Pose, y: Pose, motions: list[Pose], samples: list[HandEyeSample], camera: CameraModel
) -> tuple[Pose, Pose, float]:
    from scipy.optimize import least_squares

    def unpack(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return so3_exp(p[0:3]), p[3:6], so3_exp(p[6:9]), p[9:12]

    obj = [s.detection.object_points for s in samples]  # type: ignore[union-attr]
    img = [s.detection.image_points for s in samples]  # type: ignore[union-attr]

    def residual(p: np.ndarray) -> np.ndarray:
        rx, tx, ry, ty = unpack(p)
        rxi, txi = rx.T, -rx.T @ tx
        out = []
        for m, o, i in zip(motions, obj, img, strict=True):
            pts = o @ ry.T + ty  # board -> (gripper | base)
            pts = pts @ m.rotation.T + m.translation  # -> (base | gripper)
            pts = pts @ rxi.T + txi  # -> camera
            out.append((_project(pts, camera) - i).ravel())
        return np.concatenate(out)

    p0 = np.concatenate([_rotvec(x.rotation), x.translation, _rotvec(y.rotation), y.translation])
    sol = least_squares(residual, p0, loss="huber", f_scale=1.0, x_scale="jac", method="trf")
    rx, tx, ry, ty = unpack(sol.x)
    r = residual(sol.x).reshape(-1, 2)
    rms = float(np.sqrt(np.mean(np.sum(r**2, axis=1))))
    return Pose(rx, tx), Pose(ry, ty), rms


def calibrate_hand_eye(
    samples: Sequence[HandEyeSample],
    mode: str = "eye_to_hand",
    method: str = "park",
    camera: CameraModel | None = None,
    refine: bool = True,
    outlier_mad: float = 4.0,
    min_outlier_m: float = 0.002,
    min_outlier_rad: float = float(np.deg2rad(0.3)),
) -> HandEyeResult:
    """Solve ``C_i = X^-1 M_i Y`` (see module docstring).

    Args:
        samples: robot pose + board pose per station (>= 3; 12-20 diverse poses recommended).
        mode: ``"eye_to_hand"`` or ``"eye_in_hand"``.
        method: one of :data:`HAND_EYE_METHODS`.
        camera: intrinsics of the images, required for the reprojection refinement.
        refine: jointly refine X and Y on the corner reprojection error (needs ``camera`` and detections).
        outlier_mad: reject samples whose residual exceeds median + ``outlier_mad`` * 1.4826 * MAD and the floors
            ``min_outlier_m`` / ``min_outlier_rad``.

    Raises:
        CalibrationError: unknown mode/method, degenerate pose set, or too few inliers.
    """
    if mode not in MODES:
        raise CalibrationError(f"hand-eye mode {mode!r} unknown; use one of {MODES}")
    if method not in HAND_EYE_METHODS:
        raise CalibrationError(f"hand-eye method {method!r} unknown; use one of {HAND_EYE_METHODS}")
    samples = list(samples)
    check_pose_diversity([s.T_base_gripper for s in samples])
    motions = _motions(samples, mode)
    cams = [_plain(s.T_cam_board) for s in samples]
    keep = np.arange(len(samples))
    x, y = _closed_form(motions, cams, method)
    rejected: list[int] = []
    for _ in range(3):  # reject, re-solve, until stable
        dt, dr = _pose_residuals(x, y, [motions[i] for i in keep], [cams[i] for i in keep])

        def limit(v: np.ndarray, floor: float) -> float:
            med = float(np.median(v))
            return max(med + outlier_mad * 1.4826 * float(np.median(np.abs(v - med))), floor)

        bad = (dt > limit(dt, min_outlier_m)) | (dr > limit(dr, min_outlier_rad))
        if not bad.any():
            break
        rejected.extend(int(i) for i in keep[bad])
        keep = keep[~bad]
        if len(keep) < 3:
            raise CalibrationError(
                f"hand-eye: only {len(keep)} of {len(samples)} samples agree with each other; check that the board "
                "is rigidly mounted, the robot poses are read at the moment of capture, and the intrinsics are right"
            )
        check_pose_diversity([samples[i].T_base_gripper for i in keep])
        x, y = _closed_form([motions[i] for i in keep], [cams[i] for i in keep], method)
    if rejected:
        log.warning("hand-eye: rejected %d outlier sample(s): %s", len(rejected), sorted(rejected))
    used = f"{method}"
    reproj = float("nan")
    inliers = [samples[i] for i in keep]
    if refine and camera is not None and all(s.detection is not None for s in inliers):
        x, y, reproj = _refine(x, y, [motions[i] for i in keep], inliers, camera)
        used += "+refine"
    elif refine:
        log.info("hand-eye: reprojection refinement skipped (needs camera intrinsics and board detections)")
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
        rejected=tuple(sorted(rejected)),
    )
