"""ChArUco detection, board pose and intrinsics on MuJoCo-rendered views with a known CameraModel."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from robot_stack.calibration.charuco import (  # noqa: E402
    CharucoBoardSpec,
    board_pose,
    calibrate_intrinsics,
    detect_board,
)
from robot_stack.errors import CalibrationError  # noqa: E402


@pytest.fixture(scope="module")
def views():  # noqa: ANN201
    from robot_stack.sim.handeye import render_board_views

    return render_board_views(n_poses=12, seed=7, width=1280, height=960, max_tilt_deg=45.0)


def test_intrinsics_from_rendered_views_match_the_camera_model(views) -> None:
    from robot_stack.calibration.charuco import DEFAULT_BOARD

    detections = []
    for image in views.images:
        try:
            detections.append(detect_board(image, DEFAULT_BOARD))
        except CalibrationError:
            continue
    assert len(detections) >= 10
    result = calibrate_intrinsics(detections)  # full model: pinhole + k1, k2, p1, p2, k3
    truth = views.camera  # MuJoCo renders an ideal pinhole
    assert result.rms_px < 0.2 and result.n_views == len(detections)
    assert result.camera.fx == pytest.approx(truth.fx, rel=0.01)
    assert result.camera.fy == pytest.approx(truth.fy, rel=0.01)
    assert abs(result.camera.cx - truth.cx) < 3 and abs(result.camera.cy - truth.cy) < 3
    assert result.per_view_rms_px.shape == (len(detections),)


def test_board_pose_reprojects_and_matches_depth(views) -> None:
    from robot_stack.calibration.charuco import DEFAULT_BOARD
    from robot_stack.sim.handeye import BOARD_OFFSET_M

    image, tcp = views.images[0], views.tcp_poses[0]
    detection = detect_board(image, DEFAULT_BOARD)
    T_cam_board, rms = board_pose(detection, views.camera)
    assert rms < 0.5
    # the board centre is BOARD_OFFSET_M along the TCP z axis: check it through the ground-truth camera pose
    centre_board = np.array([*DEFAULT_BOARD.size_m, 0.0]) / 2
    centre_base = views.truth.apply(T_cam_board.apply(centre_board))
    expected = tcp.apply(np.array([0.0, 0.0, BOARD_OFFSET_M + 0.001]))
    assert np.linalg.norm(centre_base - expected) < 0.003


def test_board_not_visible_and_bad_specs() -> None:
    spec = CharucoBoardSpec()
    with pytest.raises(CalibrationError, match="not visible"):
        detect_board(np.full((480, 640, 3), 128, np.uint8), spec)
    with pytest.raises(CalibrationError, match="uint8"):
        detect_board(np.zeros((480, 640), np.float32), spec)
    with pytest.raises(CalibrationError, match="marker_m"):
        CharucoBoardSpec(marker_m=0.05)
    with pytest.raises(CalibrationError, match="views"):
        calibrate_intrinsics([])
    image = spec.image(60)
    padded = np.pad(image, 40, constant_values=255)
    assert detect_board(padded, spec).ids.size == spec.n_corners
