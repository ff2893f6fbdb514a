"""Conversions between the core's values and the plain fields of standard ROS 2 messages — without ROS.

The rclpy nodes in ``ros2_ws/src/robot_stack_ros`` copy message fields into these functions and back, so every
check that decides whether data is trustworthy (image encoding and size, stamp age, joint names, finite values)
is a plain function tested without a running graph.

Time: ROS stamps are wall-clock nanoseconds (``builtin_interfaces/Time``: ``sec`` + ``nanosec`` since the UNIX
epoch), the core runs on the monotonic clock (``time.monotonic_ns``). :func:`wall_to_mono` / :func:`mono_to_wall`
convert with the offset measured at the call, so a stamp written by one process reads as the right monotonic time
in another (on one host exactly; across hosts as well as their wall clocks are synchronised, e.g. by PTP/chrony).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import ShapeError
from robot_stack.types import Frame, JointTrajectory

__all__ = [
    "COLOR_ENCODINGS",
    "DEPTH_ENCODINGS",
    "ImageFields",
    "color_from_image",
    "depth_from_image",
    "frame_from_images",
    "image_from_fields",
    "image_to_fields",
    "join_stamp",
    "mono_to_wall",
    "positions_by_name",
    "split_stamp",
    "stamp_problem",
    "trajectory_from_points",
    "trajectory_to_points",
    "wall_to_mono",
    "xyz_cloud",
]

#: encoding -> (dtype, channels) of the encodings robot-stack reads and writes (sensor_msgs/image_encodings).
_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
#: Encodings accepted for the colour stream (converted to RGB).
COLOR_ENCODINGS = ("rgb8", "bgr8")
#: Encodings accepted for aligned depth: ``16UC1``/``mono16`` in millimetres (REP 118), ``32FC1`` in metres.
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


@dataclass(frozen=True)
class ImageFields:
    """The fields of a ``sensor_msgs/Image`` (without header).

    Attributes:
        encoding: e.g. ``"rgb8"``, ``"16UC1"``.
        height, width: pixels.
        step: bytes per row (may include padding).
        data: ``height * step`` bytes.
        is_bigendian: byte order of multi-byte pixels.
    """

    encoding: str
    height: int
    width: int
    step: int
    data: bytes | bytearray | memoryview
    is_bigendian: bool = False


def image_from_fields(img: ImageFields) -> np.ndarray:
    """Decode an image: (H, W, C) for C > 1, (H, W) otherwise, in the encoding's dtype (a view when possible).

    Raises:
        ShapeError: unknown encoding, or ``data``/``step`` do not match ``height``, ``width`` and the encoding.
    """
    if img.encoding not in _ENCODINGS:
        raise ShapeError(f"image encoding {img.encoding!r} is not supported; expected one of {sorted(_ENCODINGS)}")
    dtype, channels = _ENCODINGS[img.encoding]
    row = img.width * channels * dtype.itemsize
    if img.height <= 0 or img.width <= 0:
        raise ShapeError(f"image size {img.width}x{img.height}: expected positive width and height")
    if img.step < row:
        raise ShapeError(f"image step {img.step} B is shorter than a {img.width}-pixel {img.encoding} row ({row} B)")
    if len(img.data) != img.height * img.step:
        raise ShapeError(
            f"image data is {len(img.data)} B; a {img.width}x{img.height} {img.encoding} image with step {img.step} "
            f"needs {img.height * img.step} B"
        )
    buf = np.frombuffer(img.data, dtype=np.uint8).reshape(img.height, img.step)[:, :row]
    arr = buf.view(dtype.newbyteorder(">" if img.is_bigendian else "<")) if dtype.itemsize > 1 else buf
    arr = arr.reshape((img.height, img.width, channels) if channels > 1 else (img.height, img.width))
    return arr.astype(dtype, copy=False) if arr.dtype != dtype else arr


def image_to_fields(array: np.ndarray, encoding: str) -> ImageFields:
    """Encode (H, W[, C]) ``array`` as ``encoding`` (little-endian, no padding).

    Raises:
        ShapeError: unknown encoding, or the array's dtype/channels do not match it.
    """
    if encoding not in _ENCODINGS:
        raise ShapeError(f"image encoding {encoding!r} is not supported; expected one of {sorted(_ENCODINGS)}")
    dtype, channels = _ENCODINGS[encoding]
    arr = np.ascontiguousarray(array)
    want = 3 if channels > 1 else 2
    if arr.dtype != dtype or arr.ndim != want or (channels > 1 and arr.shape[2] != channels):
        raise ShapeError(
            f"{encoding} needs a (H, W{', 3' if channels > 1 else ''}) {dtype} array, got {arr.shape} {arr.dtype}"
        )
    h, w = arr.shape[:2]
    return ImageFields(encoding, h, w, w * channels * dtype.itemsize, arr.tobytes())


def color_from_image(img: ImageFields) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an ``rgb8`` or ``bgr8`` image (BGR is reordered).

    Raises:
        ShapeError: another encoding (e.g. ``mono8``, ``16UC1`` sent on the colour topic) or inconsistent fields.
    """
    if img.encoding not in COLOR_ENCODINGS:
        raise ShapeError(f"colour image has encoding {img.encoding!r}; expected one of {COLOR_ENCODINGS}")
    arr = image_from_fields(img)
    return np.ascontiguousarray(arr[..., ::-1] if img.encoding == "bgr8" else arr)


def depth_from_image(img: ImageFields, depth_scale: float) -> np.ndarray:
    """(H, W) uint16 depth in units of ``depth_scale`` metres (0 = invalid) from a depth image.

    ``16UC1``/``mono16`` are millimetres; ``32FC1`` is metres with NaN/0 invalid.

    Raises:
        ShapeError: not a depth encoding, or inconsistent fields.
    """
    if img.encoding not in DEPTH_ENCODINGS:
        raise ShapeError(f"depth image has encoding {img.encoding!r}; expected one of {DEPTH_ENCODINGS}")
    arr = image_from_fields(img)
    if img.encoding == "32FC1":
        metres = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    elif abs(depth_scale - 0.001) < 1e-12:
        return np.ascontiguousarray(arr, dtype=np.uint16)
    else:
        metres = arr.astype(np.float64) * 0.001
    units = np.rint(np.clip(metres, 0.0, None) / depth_scale)
    return np.clip(units, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def frame_from_images(
    color: ImageFields,
    depth: ImageFields,
    depth_scale: float,
    t_capture_ns: int,
    camera_id: str,
    seq: int,
    expect_size: tuple[int, int] | None = None,
) -> Frame:
    """An aligned RGB-D :class:`Frame` from a colour and an aligned-depth image of the same capture.

    Args:
        expect_size: (width, height) the consumer's calibration is for; None = any.

    Raises:
        ShapeError: wrong encodings, colour and depth of different sizes (depth not aligned to colour), or a size
            other than ``expect_size``.
    """
    rgb = color_from_image(color)
    units = depth_from_image(depth, depth_scale)
    if units.shape != rgb.shape[:2]:
        raise ShapeError(
            f"depth {units.shape[1]}x{units.shape[0]} does not match colour {rgb.shape[1]}x{rgb.shape[0]}; publish "
            "depth aligned to the colour stream (aligned_depth_to_color)"
        )
    if expect_size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(expect_size):
        raise ShapeError(
            f"image is {rgb.shape[1]}x{rgb.shape[0]}, the calibration is for {expect_size[0]}x{expect_size[1]}; "
            "configure the camera for the calibrated resolution or recalibrate"
        )
    return Frame(rgb, units, depth_scale, int(t_capture_ns), camera_id, int(seq))


# ------------------------------------------------------------------------------------------------- time


def split_stamp(t_ns: int) -> tuple[int, int]:
    """Wall ns -> (sec, nanosec) of a ``builtin_interfaces/Time``."""
    sec, nanosec = divmod(int(t_ns), 1_000_000_000)
    return sec, nanosec


def join_stamp(sec: int, nanosec: int) -> int:
    """(sec, nanosec) of a ``builtin_interfaces/Time`` -> wall ns."""
    return int(sec) * 1_000_000_000 + int(nanosec)


#: A wall-clock reading bracketed by two monotonic ones closer than this is taken as the clocks' offset, ns.
_TIGHT_BRACKET_NS = 2_000


def wall_minus_mono_ns(tries: int = 4) -> int:
    """The offset wall-clock - monotonic, ns, measured now.

    The wall clock is read between two monotonic readings and the tightest of up to ``tries`` brackets is kept: a
    thread preempted between two plain reads (a busy host: milliseconds) would otherwise shift every stamp it
    converts by that long, and two stamps taken 0.1 ms apart could swap order.
    """
    best_width, best_offset = None, 0
    for _ in range(max(1, tries)):
        m0 = time.monotonic_ns()
        wall = time.time_ns()
        m1 = time.monotonic_ns()
        width = m1 - m0
        if best_width is None or width < best_width:
            best_width, best_offset = width, wall - (m0 + m1) // 2
        if width <= _TIGHT_BRACKET_NS:
            break
    return best_offset


def mono_to_wall(t_mono_ns: int) -> int:
    """Monotonic ns -> wall-clock ns (UNIX epoch), with the clocks' offset measured now."""
    return int(t_mono_ns) + wall_minus_mono_ns()


def wall_to_mono(t_wall_ns: int) -> int:
    """Wall-clock ns (a ROS stamp) -> monotonic ns of this process' clock, offset measured now."""
    return int(t_wall_ns) - wall_minus_mono_ns()


def stamp_problem(t_ns: int, now_ns: int, max_age_s: float, max_future_s: float = 0.05) -> str | None:
    """Why a message stamped ``t_ns`` must not be acted on at ``now_ns`` (same clock), or None.

    Returns ``"stale: ..."`` when older than ``max_age_s``, ``"future: ..."`` when more than ``max_future_s``
    ahead (a sender whose clock is not synchronised), ``"unstamped"`` for a zero stamp.
    """
    if t_ns <= 0:
        return "unstamped: header.stamp is zero; the sender must stamp its messages with the capture time"
    age_s = (now_ns - t_ns) / 1e9
    if age_s > max_age_s:
        return f"stale: {age_s * 1e3:.0f} ms old (limit {max_age_s * 1e3:.0f} ms)"
    if -age_s > max_future_s:
        return (
            f"future: stamped {-age_s * 1e3:.0f} ms ahead of this clock (limit {max_future_s * 1e3:.0f} ms); "
            "synchronise the hosts' clocks"
        )
    return None


# --------------------------------------------------------------------------------------------- joints


def positions_by_name(names: Sequence[str], values: Sequence[float], want: Sequence[str], what: str) -> np.ndarray:
    """Pick ``want`` joints, in that order, out of a ``JointState``-style (names, values) pair: (n,) float64.

    Raises:
        ShapeError: lengths differ, a wanted joint is missing, or a value is not finite.
    """
    if len(names) != len(values):
        raise ShapeError(f"{what}: {len(names)} joint names but {len(values)} values")
    index = {name: i for i, name in enumerate(names)}
    missing = [n for n in want if n not in index]
    if missing:
        raise ShapeError(f"{what}: joints {missing} missing (message has {list(names)}); check the joint names")
    out = np.array([values[index[n]] for n in want], dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise ShapeError(f"{what}: non-finite values {out.tolist()}")
    return out


def trajectory_to_points(traj: JointTrajectory) -> tuple[int, np.ndarray, np.ndarray]:
    """A core trajectory as ``trajectory_msgs/JointTrajectory`` fields.

    Returns:
        (stamp wall ns of the first point, (N,) int64 time_from_start ns, (N, n) float64 positions rad).
    """
    t0 = int(traj.t_ns[0])
    return mono_to_wall(t0), np.asarray(traj.t_ns, np.int64) - t0, np.asarray(traj.positions)


def trajectory_from_points(
    joint_names: Sequence[str],
    stamp_wall_ns: int,
    from_start_ns: Sequence[int],
    positions: Sequence[Sequence[float]],
    want: Sequence[str] | None = None,
) -> JointTrajectory:
    """A core :class:`JointTrajectory` (monotonic times) from ``trajectory_msgs/JointTrajectory`` fields.

    Args:
        want: the robot's joint order; the message's columns are reordered to it (None = keep the message order).

    Raises:
        ShapeError: no points, ragged or non-finite positions, times not strictly increasing, missing joints.
    """
    if len(from_start_ns) == 0:
        raise ShapeError("trajectory has no points")
    pos = np.asarray(positions, dtype=np.float64)
    names = tuple(joint_names)
    if pos.ndim != 2 or pos.shape != (len(from_start_ns), len(names)):
        raise ShapeError(
            f"trajectory positions: expected {len(from_start_ns)} points x {len(names)} joints, got {pos.shape}"
        )
    if not np.all(np.isfinite(pos)):
        raise ShapeError("trajectory positions contain NaN/Inf")
    offsets = np.asarray(from_start_ns, dtype=np.int64)
    if np.any(np.diff(offsets) <= 0):
        raise ShapeError("trajectory time_from_start must be strictly increasing")
    if want is not None and tuple(want) != names:
        pos = np.stack([positions_by_name(names, row, want, "trajectory point") for row in pos])
        names = tuple(want)
    return JointTrajectory(names, wall_to_mono(stamp_wall_ns) + offsets, pos)


# ---------------------------------------------------------------------------------------------- clouds


def xyz_cloud(xyz: np.ndarray, stride: int = 1) -> np.ndarray:
    """Valid points of an (H, W, 3) float32 XYZ map (NaN = invalid), every ``stride``-th row and column.

    Returns:
        (M, 3) float32, contiguous: the ``data`` of an unorganised ``PointCloud2`` with fields x, y, z
        (FLOAT32 at offsets 0, 4, 8; point_step 12).
    """
    arr = np.asarray(xyz)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ShapeError(f"xyz map: expected (H, W, 3), got {arr.shape}")
    if stride < 1:
        raise ShapeError(f"cloud stride must be >= 1, got {stride}")
    pts = arr[::stride, ::stride].reshape(-1, 3)
    return np.ascontiguousarray(pts[np.isfinite(pts).all(axis=1)], dtype=np.float32)
