"""Hand-eye sample collection on any robot and camera: the procedure ``robot-stack calibrate hand-eye`` guides.

At each station the collector reads the robot's TCP pose (its forward kinematics, ``Robot.read_state``) and a frame
from the camera, detects the ChArUco board and estimates its pose. Stations where the board is not visible, too few
corners are found or the board pose is poor are refused with the reason, and the operator is told what to change.
Once enough diverse stations are collected, :func:`~robot_stack.calibration.handeye.calibrate_hand_eye` solves.

Who moves the arm between stations is a parameter: on hardware the operator (hand-guiding or teleop, then Enter);
in the simulator and in tests a function that drives the simulated arm. The collection code is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from robot_stack.calibration.charuco import CharucoBoardSpec, board_pose, detect_board
from robot_stack.calibration.handeye import HandEyeResult, HandEyeSample, calibrate_hand_eye, check_pose_diversity
from robot_stack.cameras.base import Camera
from robot_stack.errors import CalibrationError, CameraError
from robot_stack.robots.base import Robot

log = logging.getLogger("robot_stack.calibration")


@dataclass(frozen=True)
class StationResult:
    """What one station gave: a sample, or why not (``sample`` None and ``reason`` set)."""

    sample: HandEyeSample | None
    reason: str = ""
    reprojection_px: float = float("nan")


class HandEyeCollector:
    """Collects hand-eye samples from a robot and a camera.

    Args:
        robot: gives ``T_base_tcp`` (``read_state().ee_pose``).
        camera: sees the board (fixed camera for eye-to-hand, hand camera for eye-in-hand); started by the caller.
        board: the ChArUco board mounted on the gripper (eye-to-hand) or in the cell (eye-in-hand).
        mode: ``"eye_to_hand"`` or ``"eye_in_hand"``.
        min_corners: fewer detected corners than this refuses the station.
        max_reprojection_px: a board pose fitting its corners worse than this refuses the station.
    """

    def __init__(
        self,
        robot: Robot,
        camera: Camera,
        board: CharucoBoardSpec,
        mode: str = "eye_to_hand",
        min_corners: int = 8,
        max_reprojection_px: float = 1.0,
    ) -> None:
        self.robot = robot
        self.camera = camera
        self.board = board
        self.mode = mode
        self.min_corners = min_corners
        self.max_reprojection_px = max_reprojection_px
        self.samples: list[HandEyeSample] = []
        self.refused: list[str] = []

    def capture(self) -> StationResult:
        """Record the current station (the arm must be at rest)."""
        try:
            frame = self.camera.read()
        except CameraError as exc:
            return self._refuse(f"no camera frame: {exc}")
        tcp = self.robot.read_state().ee_pose
        try:
            detection = detect_board(frame.color, self.board, min_corners=self.min_corners)
        except CalibrationError as exc:
            return self._refuse(f"{exc}; turn the board towards the camera and keep it fully in view")
        T_cam_board, rms_px = board_pose(detection, self.camera.model)
        if rms_px > self.max_reprojection_px:
            return self._refuse(
                f"board pose fits its corners with {rms_px:.2f} px RMS (> {self.max_reprojection_px} px): motion blur "
                "or a bent board? hold still and capture again"
            )
        sample = HandEyeSample(tcp, T_cam_board, detection)
        self.samples.append(sample)
        log.info("hand-eye station %d recorded (%.2f px RMS)", len(self.samples), rms_px)
        return StationResult(sample, "", rms_px)

    def _refuse(self, reason: str) -> StationResult:
        self.refused.append(reason)
        log.warning("hand-eye station refused: %s", reason)
        return StationResult(None, reason)

    def diversity_problem(self) -> str | None:
        """Why the stations so far cannot determine the calibration (None when they can)."""
        try:
            check_pose_diversity([s.T_base_gripper for s in self.samples])
        except CalibrationError as exc:
            return str(exc)
        return None

    def calibrate(self, method: str = "park", refine: bool = True) -> HandEyeResult:
        """Solve from the collected samples (CalibrationError with the reason if they are not enough)."""
        return calibrate_hand_eye(self.samples, self.mode, method, camera=self.camera.model, refine=refine)


def collect_stations(
    collector: HandEyeCollector,
    move_to_next: Callable[[int], bool],
    n_stations: int,
    say: Callable[[str], None] = log.info,
) -> list[StationResult]:
    """Visit ``n_stations`` stations: ``move_to_next(k)`` brings the arm to station ``k`` (False = operator quit).

    ``say`` receives one line of guidance per station (what was recorded or why it was refused).
    """
    results: list[StationResult] = []
    for k in range(n_stations):
        if not move_to_next(k):
            break
        result = collector.capture()
        results.append(result)
        if result.sample is not None:
            say(f"station {k + 1}: recorded ({len(collector.samples)} so far, {result.reprojection_px:.2f} px)")
        else:
            say(f"station {k + 1}: refused: {result.reason}")
    problem = collector.diversity_problem()
    if problem:
        say(f"not enough diversity yet: {problem}")
    return results
