"""Core value types: frozen dataclasses with shapes, units and frames documented.

Conventions used everywhere in robot-stack:

* Time: integer nanoseconds on the process' monotonic clock (``time.monotonic_ns``), suffix ``_ns``.
* Lengths in metres, angles in radians, rotations as 3x3 matrices or unit quaternions ``(w, x, y, z)``
  (MuJoCo's order).
* A :class:`Pose` named ``T_a_b`` maps points expressed in frame ``b`` into frame ``a``:
  ``p_a = T_a_b.apply(p_b)``. ``T_base_cam`` is therefore the camera's pose in the robot base frame.
* Images are row-major ``(H, W, ...)``; RGB is ``uint8`` in RGB order, depth is ``uint16`` device units that
  ``depth_scale`` converts to metres (0 = invalid).

Arrays inside frozen dataclasses are made read-only so that a value really is a value.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_stack.errors import ConfigError, ShapeError

__all__ = [
    "ActionChunk",
    "ActionHead",
    "CameraModel",
    "CameraObservation",
    "Frame",
    "JointTrajectory",
    "Observation",
    "Pose",
    "RobotState",
]


def _frozen_array(value: Any, dtype: Any, name: str, shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Return ``value`` as a read-only array of ``dtype``; check its shape (None = any size on that axis)."""
    array = np.array(value, dtype=dtype, copy=True)
    if shape is not None and not _shape_matches(array.shape, shape):
        raise ShapeError(f"{name}: expected shape {shape}, got {array.shape}")
    array.setflags(write=False)
    return array


def _shape_matches(got: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
    return len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want, strict=True))


def _require_finite(array: np.ndarray, name: str) -> None:
    # the sum of an array is finite iff every element is (NaN and Inf propagate); much cheaper than isfinite()
    if not math.isfinite(float(np.sum(array, dtype=np.float64))):
        raise ShapeError(f"{name}: contains NaN or Inf; finite values are required")


# --------------------------------------------------------------------------------------------- geometry

_EYE3 = np.eye(3)


@dataclass(frozen=True)
class Pose:
    """A rigid transform ``T_parent_child`` in SE(3).

    Attributes:
        rotation: (3, 3) float64, orthonormal with det +1; columns are the child axes in the parent frame.
        translation: (3,) float64, metres; the child origin in the parent frame.
        parent: name of the frame points are mapped *into* (e.g. ``"base"``).
        child: name of the frame points are mapped *from* (e.g. ``"camera"``).
    """

    rotation: np.ndarray
    translation: np.ndarray
    parent: str = ""
    child: str = ""

    def __post_init__(self) -> None:
        rotation = _frozen_array(self.rotation, np.float64, "Pose.rotation", (3, 3))
        translation = _frozen_array(self.translation, np.float64, "Pose.translation", (3,))
        _require_finite(rotation, "Pose.rotation")
        _require_finite(translation, "Pose.translation")
        # cheap proper-rotation check (this runs per IK target): orthonormal rows and a right-handed frame
        if np.abs(rotation @ rotation.T - _EYE3).max() > 1e-6 or np.linalg.det(rotation) < 0:
            raise ShapeError("Pose.rotation: not a proper rotation matrix (R @ R.T != I or det < 0)")
        object.__setattr__(self, "rotation", rotation)
        object.__setattr__(self, "translation", translation)

    # constructors ------------------------------------------------------------------------------------
    @classmethod
    def identity(cls, parent: str = "", child: str = "") -> Pose:
        return cls(np.eye(3), np.zeros(3), parent, child)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, parent: str = "", child: str = "") -> Pose:
        """From a (4, 4) homogeneous matrix."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4):
            raise ShapeError(f"Pose.from_matrix: expected (4, 4), got {m.shape}")
        return cls(m[:3, :3], m[:3, 3], parent, child)

    @classmethod
    def from_quat_xyz(cls, quat_wxyz: np.ndarray, xyz: np.ndarray, parent: str = "", child: str = "") -> Pose:
        """From a unit quaternion ``(w, x, y, z)`` (normalised here) and a translation in metres."""
        q = np.asarray(quat_wxyz, dtype=np.float64)
        if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-9:
            raise ShapeError(f"Pose.from_quat_xyz: expected a finite non-zero (4,) quaternion, got {q!r}")
        w, x, y, z = q / np.linalg.norm(q)
        rotation = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        return cls(rotation, xyz, parent, child)

    # views -------------------------------------------------------------------------------------------
    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) float64 homogeneous matrix (a fresh, writable copy)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    def quat_wxyz(self) -> np.ndarray:
        """(4,) float64 unit quaternion ``(w, x, y, z)`` with ``w >= 0``."""
        r = self.rotation
        trace = np.trace(r)
        if trace > 0:
            s = 2.0 * np.sqrt(trace + 1.0)
            q = np.array([0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s])
        elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
            s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
            q = np.array([(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s])
        elif r[1, 1] > r[2, 2]:
            s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
            q = np.array([(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s])
        else:
            s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
            q = np.array([(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s])
        q /= np.linalg.norm(q)
        return q if q[0] >= 0 else -q

    # algebra -----------------------------------------------------------------------------------------
    def __matmul__(self, other: Pose) -> Pose:
        """Compose ``T_a_b @ T_b_c = T_a_c``."""
        if self.child and other.parent and self.child != other.parent:
            raise ShapeError(f"Pose composition frame mismatch: {self.child!r} != {other.parent!r}")
        return Pose(
            self.rotation @ other.rotation,
            self.rotation @ other.translation + self.translation,
            self.parent,
            other.child,
        )

    def inverse(self) -> Pose:
        """``T_a_b.inverse() = T_b_a``."""
        rt = self.rotation.T
        return Pose(rt, -rt @ self.translation, self.child, self.parent)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map points from the child into the parent frame. ``points``: (..., 3) metres -> (..., 3)."""
        p = np.asarray(points)
        if p.shape[-1] != 3:
            raise ShapeError(f"Pose.apply: expected (..., 3) points, got {p.shape}")
        return p @ self.rotation.T + self.translation

    def distance_to(self, other: Pose) -> tuple[float, float]:
        """(translation distance in metres, rotation angle in radians) between two poses."""
        dt = float(np.linalg.norm(self.translation - other.translation))
        cos = (np.trace(self.rotation.T @ other.rotation) - 1.0) / 2.0
        return dt, float(np.arccos(np.clip(cos, -1.0, 1.0)))


# ------------------------------------------------------------------------------------------------ camera


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics of one camera stream (the colour stream depth is aligned to).

    Attributes:
        width, height: image size in pixels.
        fx, fy: focal lengths in pixels; cx, cy: principal point in pixels (pixel centres at integer coords).
        distortion: (5,) float64 OpenCV ``(k1, k2, p1, p2, k3)`` Brown-Conrady coefficients (zeros = none).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(5))

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ShapeError(f"CameraModel: image size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ShapeError(f"CameraModel: focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        object.__setattr__(self, "distortion", _frozen_array(self.distortion, np.float64, "distortion", (5,)))

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the conventional name of the intrinsic matrix
        """(3, 3) float64 intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_fovy(cls, width: int, height: int, fovy_deg: float) -> CameraModel:
        """Square-pixel pinhole with the given vertical field of view (MuJoCo's camera convention)."""
        fy = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2.0)
        return cls(width, height, fy, fy, (width - 1) / 2.0, (height - 1) / 2.0)


@dataclass(frozen=True)
class Frame:
    """One aligned RGB-D capture.

    Attributes:
        color: (H, W, 3) uint8, RGB.
        depth: (H, W) uint16 device units, aligned to ``color``; 0 = no measurement.
        depth_scale: metres per depth unit (RealSense D4xx default 0.001).
        t_capture_ns: capture time on this process' monotonic clock, ns.
        camera_id: logical camera name (e.g. ``"front"``), which selects its calibration.
        seq: frame counter of the stream (gaps = dropped frames).
    """

    color: np.ndarray
    depth: np.ndarray
    depth_scale: float
    t_capture_ns: int
    camera_id: str
    seq: int = 0

    def __post_init__(self) -> None:
        color = np.asarray(self.color)
        depth = np.asarray(self.depth)
        if color.dtype != np.uint8 or color.ndim != 3 or color.shape[2] != 3:
            raise ShapeError(f"Frame.color: expected (H, W, 3) uint8, got {color.shape} {color.dtype}")
        if depth.dtype != np.uint16 or depth.shape != color.shape[:2]:
            raise ShapeError(
                f"Frame.depth: expected {color.shape[:2]} uint16 aligned to color, got {depth.shape} {depth.dtype}"
            )
        if not (self.depth_scale > 0 and np.isfinite(self.depth_scale)):
            raise ShapeError(f"Frame.depth_scale: must be positive metres/unit, got {self.depth_scale}")


# ------------------------------------------------------------------------------------------ robot & actions


@dataclass(frozen=True)
class RobotState:
    """Proprioception at one instant.

    Attributes:
        t_ns: time the state was read, monotonic ns.
        q: (n,) float64 joint positions, rad (arm joints only, in ``joint_names`` order of the robot).
        dq: (n,) float64 joint velocities, rad/s.
        ee_pose: tool-centre-point pose in the robot base frame (``T_base_tcp``).
        gripper: gripper opening in [0, 1] (0 = closed, 1 = open).
    """

    t_ns: int
    q: np.ndarray
    dq: np.ndarray
    ee_pose: Pose
    gripper: float = 1.0

    def __post_init__(self) -> None:
        q = _frozen_array(self.q, np.float64, "RobotState.q", (None,))
        dq = _frozen_array(self.dq, np.float64, "RobotState.dq", q.shape)
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "dq", dq)

    def vector(self) -> np.ndarray:
        """(n + 3 + 1,) float32 proprio vector: q, TCP xyz in base frame (m), gripper opening."""
        return np.concatenate([self.q, self.ee_pose.translation, [self.gripper]]).astype(np.float32)


@dataclass(frozen=True)
class CameraObservation:
    """What the policy sees of one camera, in the robot base frame (4D-VLA), in one or both of two forms.

    *XYZ form:* ``xyz_base``, computed on the robot. *Depth form:* the aligned ``depth`` and its packed calibration
    ``calib`` (:mod:`robot_stack.calibration.payload`), for a model that computes the XYZ in its own graph; then
    ``xyz_base`` may be None (not computed).

    Attributes:
        camera_id: logical camera name.
        rgb: (H, W, 3) uint8.
        xyz_base: (H, W, 3) float32 metres in the robot base frame; NaN where depth was invalid. None = not computed
            (depth form only).
        t_capture_ns: capture time, monotonic ns.
        depth: (H, W) uint16 depth units aligned to ``rgb`` (0 = invalid), or None.
        calib: (17,) float32 packed calibration of ``depth`` (intrinsics, depth scale, ``T_base_cam``), or None.
        calib_version: digest of the calibration file ``calib`` comes from ("" = unknown).
    """

    camera_id: str
    rgb: np.ndarray
    xyz_base: np.ndarray | None
    t_capture_ns: int
    depth: np.ndarray | None = None
    calib: np.ndarray | None = None
    calib_version: str = ""

    def __post_init__(self) -> None:
        rgb = np.asarray(self.rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ShapeError(f"CameraObservation.rgb: expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if self.xyz_base is not None:
            xyz = np.asarray(self.xyz_base)
            if xyz.dtype != np.float32 or xyz.shape != rgb.shape:
                raise ShapeError(
                    f"CameraObservation.xyz_base: expected {rgb.shape} float32, got {xyz.shape} {xyz.dtype}"
                )
        elif self.depth is None or self.calib is None:
            raise ShapeError("CameraObservation: needs xyz_base, or depth and calib (the depth form)")
        if self.depth is not None:
            depth = np.asarray(self.depth)
            if depth.dtype != np.uint16 or depth.shape != rgb.shape[:2]:
                raise ShapeError(
                    f"CameraObservation.depth: expected {rgb.shape[:2]} uint16 aligned to rgb, got {depth.shape} "
                    f"{depth.dtype}"
                )
        if self.calib is not None:
            object.__setattr__(self, "calib", _frozen_array(self.calib, np.float32, "CameraObservation.calib", (17,)))


@dataclass(frozen=True)
class Observation:
    """One policy input: robot state plus every camera, with the time it describes.

    Attributes:
        t_obs_ns: observation time, monotonic ns (the oldest capture time among its parts).
        state: robot proprioception.
        cameras: per-camera RGB + base-frame XYZ.
        task: natural-language instruction.
    """

    t_obs_ns: int
    state: RobotState
    cameras: tuple[CameraObservation, ...] = ()
    task: str = ""

    def arrays(self, depth_form: bool = False) -> dict[str, np.ndarray]:
        """Named model inputs: ``state`` (float32 (n+4,)) and per camera ``<camera>/rgb`` with ``<camera>/xyz``
        (XYZ form) or, with ``depth_form``, ``<camera>/depth`` and ``<camera>/calib``.

        Raises:
            ShapeError: a camera lacks the form asked for.
        """
        out: dict[str, np.ndarray] = {"state": self.state.vector()}
        for cam in self.cameras:
            out[f"{cam.camera_id}/rgb"] = cam.rgb
            if depth_form:
                if cam.depth is None or cam.calib is None:
                    raise ShapeError(
                        f"camera {cam.camera_id!r} has no depth/calibration in this observation; the depth form needs "
                        "a calibrated projector without lens distortion"
                    )
                out[f"{cam.camera_id}/depth"] = cam.depth
                out[f"{cam.camera_id}/calib"] = cam.calib
            else:
                if cam.xyz_base is None:
                    raise ShapeError(f"camera {cam.camera_id!r}: XYZ was not computed (the observation is depth-only)")
                out[f"{cam.camera_id}/xyz"] = cam.xyz_base
        return out


class ActionHead(str, enum.Enum):
    """The action language a policy speaks (its manifest's ``action_head``): one name everywhere.

    ``continuous``: a float chunk in a continuous action space; ``binned``: integer bins per dimension;
    ``latent_vq``: vector-quantised action tokens; ``motion_tracks``: 2D keypoint tracks in two calibrated views.
    """

    CONTINUOUS = "continuous"
    BINNED = "binned"
    LATENT_VQ = "latent_vq"
    MOTION_TRACKS = "motion_tracks"

    @property
    def output(self) -> str:
        """The model output that carries the chunk in this language."""
        return _ACTION_OUTPUTS[self]

    @classmethod
    def parse(cls, value: ActionHead | str) -> ActionHead:
        """``value`` as an ActionHead; ConfigError naming the valid heads otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"action head {value!r} unknown; expected one of {[h.value for h in cls]}") from None


_ACTION_OUTPUTS = {
    ActionHead.CONTINUOUS: "actions",
    ActionHead.BINNED: "bins",
    ActionHead.LATENT_VQ: "tokens",
    ActionHead.MOTION_TRACKS: "tracks",
}


@dataclass(frozen=True)
class ActionChunk:
    """A policy's answer: ``horizon`` actions, step ``k`` meant for ``t_obs_ns + k * dt_s``.

    Attributes:
        t_obs_ns: time of the observation the chunk was computed from, monotonic ns (robot clock).
        dt_s: seconds between consecutive actions.
        actions: (horizon, dim) float32, finite. Meaning given by ``action_space``.
        action_space: e.g. ``"ee_delta_xyz"`` (metres, TCP displacement from the observed TCP position in the
            base frame, cumulative per step) or ``"joint_position"`` (rad).
        gripper: (horizon,) float32 opening in [0, 1], or None to keep the current opening.
        model_id: which model produced it.
    """

    t_obs_ns: int
    dt_s: float
    actions: np.ndarray
    action_space: str
    gripper: np.ndarray | None = None
    model_id: str = ""

    def __post_init__(self) -> None:
        actions = _frozen_array(self.actions, np.float32, "ActionChunk.actions", (None, None))
        _require_finite(actions, "ActionChunk.actions")
        if actions.shape[0] < 1:
            raise ShapeError("ActionChunk.actions: horizon must be >= 1")
        if not (self.dt_s > 0 and np.isfinite(self.dt_s)):
            raise ShapeError(f"ActionChunk.dt_s: must be a positive number of seconds, got {self.dt_s}")
        object.__setattr__(self, "actions", actions)
        if self.gripper is not None:
            gripper = _frozen_array(self.gripper, np.float32, "ActionChunk.gripper", (actions.shape[0],))
            _require_finite(gripper, "ActionChunk.gripper")
            object.__setattr__(self, "gripper", gripper)

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    def step_times_ns(self) -> np.ndarray:
        """(horizon,) int64 monotonic times each action is meant for."""
        return self.t_obs_ns + np.round(np.arange(self.horizon) * self.dt_s * 1e9).astype(np.int64)


@dataclass(frozen=True)
class JointTrajectory:
    """Timestamped joint-space waypoints for the executor.

    Attributes:
        joint_names: names of the ``n`` joints, in column order.
        t_ns: (N,) int64 strictly increasing monotonic times, ns.
        positions: (N, n) float64 joint positions, rad; finite.
        gripper: (N,) float64 opening in [0, 1], or None.
    """

    joint_names: tuple[str, ...]
    t_ns: np.ndarray
    positions: np.ndarray
    gripper: np.ndarray | None = None

    def __post_init__(self) -> None:
        t_ns = _frozen_array(self.t_ns, np.int64, "JointTrajectory.t_ns", (None,))
        positions = _frozen_array(
            self.positions, np.float64, "JointTrajectory.positions", (t_ns.shape[0], len(self.joint_names))
        )
        if t_ns.shape[0] < 1:
            raise ShapeError("JointTrajectory: needs at least one waypoint")
        if np.any(np.diff(t_ns) <= 0):
            raise ShapeError("JointTrajectory.t_ns: must be strictly increasing")
        _require_finite(positions, "JointTrajectory.positions")
        object.__setattr__(self, "t_ns", t_ns)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "joint_names", tuple(self.joint_names))
        if self.gripper is not None:
            gripper = _frozen_array(self.gripper, np.float64, "JointTrajectory.gripper", (t_ns.shape[0],))
            _require_finite(gripper, "JointTrajectory.gripper")
            object.__setattr__(self, "gripper", gripper)

    def __len__(self) -> int:
        return int(self.t_ns.shape[0])
