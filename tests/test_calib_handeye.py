"""Hand-eye calibration: exact recovery on synthetic poses, outliers, degenerate pose sets, and the MuJoCo target."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")
from scipy.spatial.transform import Rotation  # noqa: E402

from robot_stack.calibration.handeye import (  # noqa: E402
    HAND_EYE_METHODS,
    HandEyeSample,
    calibrate_hand_eye,
    check_pose_diversity,
)
from robot_stack.errors import CalibrationError  # noqa: E402
from robot_stack.types import Pose  # noqa: E402

TARGET_M, TARGET_DEG = 0.002, 0.2


def rand_pose(rng: np.random.Generator, scale: float = 0.5, angle: float = np.pi) -> Pose:
    return Pose(Rotation.from_rotvec(rng.normal(size=3) * angle / 2).as_matrix(), rng.normal(size=3) * scale)


def synthetic(mode: str, n: int = 12, seed: int = 0) -> tuple[list[HandEyeSample], Pose, Pose]:
    rng = np.random.default_rng(seed)
    x, y = rand_pose(rng), rand_pose(rng, 0.1)
    samples = []
    for _ in range(n):
        T_base_gripper = Pose(Rotation.from_rotvec(rng.normal(size=3) * 0.5).as_matrix(), rng.uniform(-0.5, 0.5, 3))
        m = T_base_gripper if mode == "eye_to_hand" else T_base_gripper.inverse()
        samples.append(HandEyeSample(T_base_gripper, x.inverse() @ m @ y))
    return samples, x, y


@pytest.mark.parametrize("mode", ["eye_to_hand", "eye_in_hand"])
@pytest.mark.parametrize("method", HAND_EYE_METHODS)
def test_every_method_recovers_exact_transforms(mode: str, method: str) -> None:
    samples, x, y = synthetic(mode)
    result = calibrate_hand_eye(samples, mode, method, refine=False)
    dt, dr = result.X.distance_to(x)
    assert dt < 1e-5 and dr < 1e-5
    dt, dr = result.Y.distance_to(y)
    assert dt < 1e-5 and dr < 1e-5
    assert result.rejected == () and result.translation_rms_m < 1e-5


def test_outlier_sample_is_rejected() -> None:
    samples, x, _ = synthetic("eye_to_hand", n=14, seed=3)
    bad = samples[5]
    samples[5] = HandEyeSample(bad.T_base_gripper, Pose(bad.T_cam_board.rotation, bad.T_cam_board.translation + 0.03))
    result = calibrate_hand_eye(samples, "eye_to_hand", "tsai", refine=False)
    assert result.rejected == (5,)
    dt, dr = result.X.distance_to(x)
    assert dt < 1e-5 and dr < 1e-5


def test_rotations_about_one_axis_are_refused() -> None:
    poses = [
        Pose(Rotation.from_rotvec([0, 0, a]).as_matrix(), [0.4 + 0.05 * i, 0.1 * np.sin(i), 0.3])
        for i, a in enumerate(np.linspace(-0.8, 0.8, 10))
    ]
    with pytest.raises(CalibrationError, match="about one axis"):
        check_pose_diversity(poses)
    samples = [HandEyeSample(p, Pose.identity()) for p in poses]
    with pytest.raises(CalibrationError, match="two different axes"):
        calibrate_hand_eye(samples)
    with pytest.raises(CalibrationError, match="rotates at most"):
        check_pose_diversity([Pose(np.eye(3), [0.1 * i, 0, 0]) for i in range(5)])
    with pytest.raises(CalibrationError, match="at least 3"):
        check_pose_diversity(poses[:2])


def test_bad_arguments() -> None:
    samples, _, _ = synthetic("eye_to_hand")
    with pytest.raises(CalibrationError, match="method"):
        calibrate_hand_eye(samples, method="magic")
    with pytest.raises(CalibrationError, match="mode"):
        calibrate_hand_eye(samples, mode="eye_on_table")


def test_sim_eye_to_hand_meets_accuracy_target() -> None:
    from robot_stack.sim.handeye import run_sim_hand_eye

    report = run_sim_hand_eye(n_poses=10, seed=1, method="park")
    assert report.n_detected >= 8
    assert report.result.method == "park+refine"
    assert report.translation_error_m <= TARGET_M, report
    assert np.rad2deg(report.rotation_error_rad) <= TARGET_DEG, report
    assert report.result.reprojection_rms_px < 0.5
    residuals = report.result.residuals()
    assert residuals["n_samples"] == report.n_detected


def test_sim_degenerate_pose_set_gives_clear_error() -> None:
    from robot_stack.sim.handeye import _look_pose, run_sim_hand_eye

    toward = np.array([1.15, 0.0, 0.95])
    poses = [_look_pose(np.array([0.5, 0.0, 0.42]), toward, np.zeros(3), r) for r in np.deg2rad([-40, -20, 0, 20, 40])]
    with pytest.raises(CalibrationError, match="about one axis"):
        run_sim_hand_eye(poses=poses, width=640, height=480)


@pytest.mark.slow
def test_sim_repeatability_over_ten_pose_sets() -> None:
    from robot_stack.sim.handeye import run_sim_hand_eye

    reports = [run_sim_hand_eye(n_poses=15, seed=100 + k, method=HAND_EYE_METHODS[k % 5]) for k in range(10)]
    t = np.array([r.result.X.translation for r in reports])
    errors_mm = [r.translation_error_m * 1e3 for r in reports]
    errors_deg = [np.rad2deg(r.rotation_error_rad) for r in reports]
    assert max(errors_mm) <= TARGET_M * 1e3 and max(errors_deg) <= TARGET_DEG
    assert np.max(np.linalg.norm(t - t.mean(axis=0), axis=1)) < 0.001  # runs agree within 1 mm
