"""A camera and a robot fed by message streams: the core's interfaces over data that arrives from a graph.

:class:`StreamedCamera` pairs colour and aligned-depth images by stamp into :class:`Frame` s;
:class:`StreamedArm` turns the newest joint state (or, for a recorder, the one in force at a frame's capture time)
into :class:`RobotState` and hands commands to a callback. The ROS nodes push message fields in;
:class:`~robot_stack.cycle.PolicyCycle` and :class:`~robot_stack.control.executor.Executor` read them through the
usual interfaces. Nothing here knows ROS.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from robot_stack.cameras.base import Camera
from robot_stack.errors import CameraError, RobotError, ShapeError
from robot_stack.graph.diagnostics import StreamMonitor
from robot_stack.graph.messages import ImageFields, frame_from_images, stamp_problem, wall_to_mono
from robot_stack.robots.base import JointLimits, Robot
from robot_stack.types import CameraModel, Frame, Pose, RobotState

__all__ = ["StreamedArm", "StreamedCamera"]


class StreamedCamera(Camera):
    """The newest aligned RGB-D frame received from two image streams.

    Args:
        camera_id: logical camera name put in every frame.
        model: the calibrated intrinsics; images of another size are rejected.
        depth_scale: metres per depth unit of the frames produced.
        monitor: where arrivals (with stamp→receive latency) and rejections are counted.
    """

    def __init__(self, camera_id: str, model: CameraModel, depth_scale: float = 0.001, monitor: Any = None) -> None:
        self.camera_id = camera_id
        self._model = model
        self.depth_scale = depth_scale
        self.monitor: StreamMonitor = monitor if monitor is not None else StreamMonitor(f"{camera_id} frames")
        self._lock = threading.Lock()
        self._color: dict[int, ImageFields] = {}  # wall stamp ns -> image still waiting for its partner
        self._depth: dict[int, ImageFields] = {}
        self._frame: Frame | None = None
        self._seq = 0
        self._last_stamp = 0

    def start(self) -> None:
        """Nothing to open: frames arrive by :meth:`push_color` / :meth:`push_depth`."""

    def stop(self) -> None:
        """Nothing to close."""

    @property
    def model(self) -> CameraModel:
        return self._model

    def push_color(self, stamp_wall_ns: int, image: ImageFields) -> None:
        """A colour image stamped ``stamp_wall_ns`` (its capture time on the wall clock, as ROS stamps are)."""
        with self._lock:
            self._add(self._color, stamp_wall_ns, image)

    def push_depth(self, stamp_wall_ns: int, image: ImageFields) -> None:
        """An aligned depth image stamped ``stamp_wall_ns``; pairs with the colour image of the same stamp."""
        with self._lock:
            self._add(self._depth, stamp_wall_ns, image)

    #: images kept per stream while their partner is awaited: 1 s at 30 Hz. The two streams are delivered
    #: independently; with reliable QoS one may run several frames behind the other while a lost fragment is
    #: repaired (100-450 ms seen on a loaded 2-core machine), and at 4 such pairs were lost as "unpaired"
    PENDING = 30

    def _add(self, pending: dict[int, ImageFields], t_ns: int, image: ImageFields) -> None:
        pending[t_ns] = image
        while len(pending) > self.PENDING:
            del pending[min(pending)]
            self.monitor.dropped("unpaired", "colour or depth image of a capture never arrived")
        if t_ns in self._color and t_ns in self._depth:
            self._pair(t_ns)

    def _pair(self, stamp_ns: int) -> None:
        color, depth = self._color.pop(stamp_ns), self._depth.pop(stamp_ns)
        for pending in (self._color, self._depth):  # older halves can no longer become the newest frame
            for old in [t for t in pending if t < stamp_ns]:
                del pending[old]
        t_ns = wall_to_mono(stamp_ns)  # converted once per pair (the offset is re-measured on every call)
        if self._frame is not None and stamp_ns <= self._last_stamp:
            self.monitor.dropped("out_of_order", "capture older than the newest frame")
            return
        try:
            frame = frame_from_images(
                color, depth, self.depth_scale, t_ns, self.camera_id, self._seq + 1,
                (self._model.width, self._model.height),
            )  # fmt: skip
        except ShapeError as exc:
            self.monitor.dropped("image", str(exc))
            raise
        self._seq += 1
        self._frame, self._last_stamp = frame, stamp_ns
        now = time.monotonic_ns()
        self.monitor.received(now, (now - t_ns) / 1e9)

    def read(self) -> Frame:
        """The newest complete frame (possibly one already read: the stale-data guard judges repeats and age).

        Raises:
            CameraError: no complete frame received yet.
        """
        with self._lock:
            frame = self._frame
        if frame is None:
            raise CameraError(
                f"camera {self.camera_id!r}: no complete colour + aligned depth pair received yet; check that the "
                "camera node runs and both image topics are connected"
            )
        return frame


class StreamedArm(Robot):
    """A :class:`Robot` whose state is the newest received joint state and whose commands go to ``send``.

    Args:
        names: arm joint names (the order of every ``q``).
        limits: joint limits (what the safety filter enforces).
        fk: q (n,) rad -> ``T_base_tcp`` (the TCP pose a :class:`RobotState` carries).
        send: publishes one set-point (q (n,) rad, gripper opening or None); None = this arm is read-only.
        max_state_age_s: a state older than this is not used (:meth:`read_state` raises); :meth:`state_at` takes
            none measured further than this from the time asked for.
        history: joint states kept for :meth:`state_at` (1: only the newest). Size it to cover how late a frame
            may be taken, at the joint-state rate.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        limits: JointLimits,
        fk: Callable[[np.ndarray], Pose],
        send: Callable[[np.ndarray, float | None], None] | None,
        max_state_age_s: float,
        history: int = 1,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1 joint state, got {history}")
        self._names, self._limits, self._fk, self._send = tuple(names), limits, fk, send
        self.max_state_age_s = max_state_age_s
        self._history: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=int(history))  # newest last
        self._lock = threading.Lock()

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def limits(self) -> JointLimits:
        return self._limits

    def update(self, t_ns: int, q: np.ndarray, dq: np.ndarray) -> None:
        """Store a joint state measured at monotonic ``t_ns``: q, dq (n,) rad, rad/s in :attr:`joint_names` order."""
        with self._lock:
            self._history.append((int(t_ns), np.asarray(q, np.float64), np.asarray(dq, np.float64)))

    def _newest(self) -> tuple[int, np.ndarray, np.ndarray] | None:
        with self._lock:
            return self._history[-1] if self._history else None

    @property
    def latest_t_ns(self) -> int | None:
        """Monotonic measurement time of the newest joint state received, ns (None: none yet)."""
        latest = self._newest()
        return None if latest is None else latest[0]

    def state_problem(self, now_ns: int) -> str | None:
        """Why there is no usable state at ``now_ns`` (None when there is)."""
        latest = self._newest()
        if latest is None:
            return "no joint state received yet; is the robot driver / sim bridge running?"
        return stamp_problem(latest[0], now_ns, self.max_state_age_s)

    def read_state(self) -> RobotState:
        """The newest state, with the TCP pose from forward kinematics.

        Raises:
            RobotError: none received yet, or older than ``max_state_age_s``.
        """
        problem = self.state_problem(time.monotonic_ns())
        if problem is not None:
            raise RobotError(f"joint state unusable: {problem}")
        latest = self._newest()
        assert latest is not None  # states are only ever added
        t_ns, q, dq = latest
        return RobotState(t_ns, q, dq, self._fk(q))

    def state_at(self, t_ns: int) -> RobotState:
        """The kept joint state in force at monotonic ``t_ns`` (e.g. a frame's capture time), with its FK: the newest
        one measured at or before ``t_ns`` (the earliest after it when none is kept from before).

        What a recorder pairs with a frame: a frame taken late (a delivery burst, a busy host) still gets the arm as
        it was known when the image was captured — what a policy would have seen beside that image — not as it is
        when the frame is handled.

        Raises:
            RobotError: none received yet, or the one chosen was measured more than ``max_state_age_s`` from ``t_ns``.
        """
        t_ns = int(t_ns)
        with self._lock:
            chosen: tuple[int, np.ndarray, np.ndarray] | None = None
            for sample in reversed(self._history):  # newest first: a frame is usually near the newest state
                chosen = sample
                if sample[0] <= t_ns:
                    break
            kept = len(self._history)
        if chosen is None:
            raise RobotError("joint state unusable: no joint state received yet")
        gap_s = abs(chosen[0] - t_ns) / 1e9
        if gap_s > self.max_state_age_s:
            raise RobotError(
                f"joint state unusable: the one in force was measured {gap_s * 1e3:.0f} ms from the time asked for "
                f"(limit {self.max_state_age_s * 1e3:.0f} ms, {kept} kept)"
            )
        return RobotState(chosen[0], chosen[1], chosen[2], self._fk(chosen[1]))

    def command(self, q: np.ndarray, gripper: float | None = None) -> None:
        """Hand one set-point to ``send``.

        Raises:
            RobotError: this arm is read-only (no ``send``).
        """
        if self._send is None:
            raise RobotError("this StreamedArm only reads joint states; commands go through the executor")
        self._send(np.asarray(q, dtype=np.float64), gripper)
