"""ChArUco calibration targets (OpenCV ``cv2.aruco``): board definition, detection, board pose, intrinsics.

Frames: the *board* frame has its origin at the board's top-left chessboard corner (as printed/rendered),
x along the squares' columns, y along the rows, z into the board (OpenCV's ChArUco convention); object points
are in metres in that frame. ``T_cam_board`` maps board points into the camera's optical frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import CalibrationError
from robot_stack.types import CameraModel, Pose

__all__ = [
    "BoardDetection",
    "CharucoBoardSpec",
    "IntrinsicsResult",
    "board_pose",
    "calibrate_intrinsics",
    "detect_board",
]

log = logging.getLogger("robot_stack.calibration")


def _cv2():  # noqa: ANN202
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - a dependency
        raise CalibrationError(
            f"OpenCV is not importable ({exc}); install opencv-contrib-python-headless>=4.10,<5"
        ) from exc
    if not hasattr(cv2, "aruco") or not hasattr(cv2.aruco, "CharucoDetector"):
        raise CalibrationError(
            f"OpenCV {cv2.__version__} lacks cv2.aruco.CharucoDetector; install opencv-contrib-python-headless>=4.10,<5"
        )
    return cv2


@dataclass(frozen=True)
class CharucoBoardSpec:
    """A ChArUco board.

    Attributes:
        squares_x, squares_y: chessboard squares along x (columns) and y (rows).
        square_m: square edge, metres; marker_m: ArUco marker edge, metres (< square_m).
        dictionary: OpenCV predefined dictionary name, e.g. ``"DICT_5X5_100"``.
    """

    squares_x: int = 5
    squares_y: int = 7
    square_m: float = 0.03
    marker_m: float = 0.022
    dictionary: str = "DICT_5X5_100"

    def __post_init__(self) -> None:
        if self.squares_x < 3 or self.squares_y < 3:
            raise CalibrationError(
                f"CharucoBoardSpec: needs at least 3x3 squares, got {self.squares_x}x{self.squares_y}"
            )
        if not (0 < self.marker_m < self.square_m):
            raise CalibrationError(
                f"CharucoBoardSpec: marker_m must be in (0, square_m), got {self.marker_m} vs {self.square_m}"
            )

    @property
    def size_m(self) -> tuple[float, float]:
        """(width, height) of the chessboard area, metres."""
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    @property
    def n_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    def board(self):  # noqa: ANN201 - cv2.aruco.CharucoBoard
        cv2 = _cv2()
        if not hasattr(cv2.aruco, self.dictionary):
            raise CalibrationError(f"unknown ArUco dictionary {self.dictionary!r}; use e.g. 'DICT_5X5_100'")
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, dictionary)

    def image(self, px_per_square: int = 100) -> np.ndarray:
        """(H, W) uint8 image of the board without margin (``squares_y * px`` x ``squares_x * px``)."""
        size = (self.squares_x * px_per_square, self.squares_y * px_per_square)
        return self.board().generateImage(size, marginSize=0)

    def corner_points(self) -> np.ndarray:
        """(N, 3) float64 chessboard inner corners in the board frame, metres, indexed by ChArUco corner id."""
        return np.asarray(self.board().getChessboardCorners(), dtype=np.float64).reshape(-1, 3)


@dataclass(frozen=True)
class BoardDetection:
    """ChArUco corners found in one image.

    Attributes:
        ids: (N,) int32 corner ids; image_points: (N, 2) float64 pixels; object_points: (N, 3) float64 metres,
        board frame; image_size: (width, height) of the image.
    """

    ids: np.ndarray
    image_points: np.ndarray
    object_points: np.ndarray
    image_size: tuple[int, int]


#: The project's board: 5 x 7 squares of 30 mm, 22 mm markers, ``DICT_5X5_100`` (printed for the hardware procedure,
#: rendered in the simulator).
DEFAULT_BOARD = CharucoBoardSpec(5, 7, 0.03, 0.022, "DICT_5X5_100")


def detect_board(image: np.ndarray, spec: CharucoBoardSpec, min_corners: int = 6) -> BoardDetection:
    """Find the ChArUco corners of ``spec`` in an (H, W, 3) uint8 RGB or (H, W) uint8 image.

    Raises:
        CalibrationError: fewer than ``min_corners`` corners are visible (the message says what to do).
    """
    cv2 = _cv2()
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise CalibrationError(f"detect_board: expected an (H, W[, 3]) uint8 image, got {img.shape} {img.dtype}")
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    detector = cv2.aruco.CharucoDetector(spec.board())
    corners, ids, _, marker_ids = detector.detectBoard(gray)
    n = 0 if ids is None else len(ids)
    if n < min_corners:
        n_markers = 0 if marker_ids is None else len(marker_ids)
        raise CalibrationError(
            f"ChArUco board not visible: {n} corners / {n_markers} markers found, need >= {min_corners} corners. "
            "Move the board (or robot) so that the whole board is in view, well lit and not too oblique."
        )
    ids = ids.reshape(-1).astype(np.int32)
    return BoardDetection(
        ids=ids,
        image_points=corners.reshape(-1, 2).astype(np.float64),
        object_points=spec.corner_points()[ids],
        image_size=(gray.shape[1], gray.shape[0]),
    )


def board_pose(detection: BoardDetection, camera: CameraModel) -> tuple[Pose, float]:
    """``T_cam_board`` from one detection by PnP (IPPE start, Levenberg-Marquardt refinement).

    Returns:
        (pose with parent ``"camera"`` and child ``"board"``, RMS reprojection error in pixels).
    """
    cv2 = _cv2()
    obj = detection.object_points.astype(np.float64)
    img = detection.image_points.astype(np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, camera.K, camera.distortion, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise CalibrationError("board_pose: PnP failed; the corners may be degenerate (collinear)")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, camera.K, camera.distortion, rvec, tvec)
    projected, _ = cv2.projectPoints(obj, rvec, tvec, camera.K, camera.distortion)
    rms = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - img) ** 2, axis=1))))
    rotation, _ = cv2.Rodrigues(rvec)
    return Pose(rotation, tvec.reshape(3), "camera", "board"), rms


@dataclass(frozen=True)
class IntrinsicsResult:
    """Outcome of :func:`calibrate_intrinsics`.

    Attributes:
        camera: estimated intrinsics and distortion.
        rms_px: overall RMS reprojection error, pixels; per_view_rms_px: (n_views,) float64.
        n_views: images used.
    """

    camera: CameraModel
    rms_px: float
    per_view_rms_px: np.ndarray
    n_views: int


def calibrate_intrinsics(
    detections: Sequence[BoardDetection], fix_distortion: bool = False, min_views: int = 4
) -> IntrinsicsResult:
    """Pinhole + Brown-Conrady intrinsics from ChArUco detections of one camera (``cv2.calibrateCamera``).

    Args:
        detections: detections from different board poses (vary distance and tilt by >= 20 deg).
        fix_distortion: estimate only fx, fy, cx, cy (distortion fixed at zero).

    Raises:
        CalibrationError: too few views, or image sizes differ.
    """
    cv2 = _cv2()
    if len(detections) < min_views:
        raise CalibrationError(
            f"calibrate_intrinsics: {len(detections)} views, need >= {min_views} with the board at different tilts"
        )
    sizes = {d.image_size for d in detections}
    if len(sizes) != 1:
        raise CalibrationError(f"calibrate_intrinsics: all images must have one size, got {sorted(sizes)}")
    (width, height) = sizes.pop()
    obj = [d.object_points.astype(np.float32) for d in detections]
    img = [d.image_points.astype(np.float32) for d in detections]
    flags = 0
    if fix_distortion:
        flags |= cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST
    rms, K, dist, _, _, _, _, per_view = cv2.calibrateCameraExtended(obj, img, (width, height), None, None, flags=flags)
    d = np.zeros(5)
    d[: min(5, dist.size)] = dist.reshape(-1)[:5]
    camera = CameraModel(width, height, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), d)
    log.info("intrinsics from %d views: rms %.3f px, fx %.1f fy %.1f", len(detections), rms, camera.fx, camera.fy)
    return IntrinsicsResult(camera, float(rms), np.asarray(per_view, dtype=np.float64).reshape(-1), len(detections))
