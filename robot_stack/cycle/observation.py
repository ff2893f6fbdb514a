"""The one observation builder: capture every camera, project depth into the robot base frame, read the robot.

Every loop that makes :class:`~robot_stack.types.Observation` values (the policy cycle, the lockstep simulator, the
recording sessions) builds them here, so they agree on what ``t_obs_ns`` is (the oldest frame's capture time) and
on the order of capture and proprioception (frames first, then the state).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from robot_stack.calibration.projection import DepthProjector
from robot_stack.cameras.base import Camera
from robot_stack.errors import CameraError
from robot_stack.metrics import StageTimes
from robot_stack.robots.base import Robot
from robot_stack.types import CameraObservation, Frame, Observation, RobotState

__all__ = ["Capture", "ObservationSource", "observation_from"]


def observation_from(
    frames: Sequence[Frame], views: Sequence[CameraObservation], state: RobotState, task: str = ""
) -> Observation:
    """The observation of ``frames`` (their base-frame ``views``, possibly none) and the ``state`` read after them;
    ``t_obs_ns`` is the oldest frame's capture time."""
    return Observation(min(f.t_capture_ns for f in frames), state, tuple(views), task)


@dataclass(frozen=True)
class Capture:
    """One captured observation, before the stale-data guard: frames, base-frame views, the robot state read
    right after the frames, and how long capturing took (s). ``error`` is set instead when a camera failed."""

    frames: tuple[Frame, ...] = ()
    views: tuple[Any, ...] = ()
    state: Any = None
    duration_s: float = 0.0
    error: CameraError | None = None

    def observation(self, task: str = "") -> Observation:
        """This capture as an :class:`Observation` (see :func:`observation_from`)."""
        return observation_from(self.frames, self.views, self.state, task)


class ObservationSource:
    """Cameras, each paired with its calibrated projector, and the robot whose state goes with their frames.

    Args:
        cameras: ``(camera, projector)`` pairs; the projector turns the camera's depth into base-frame XYZ.
        robot: proprioception source (read right after the frames).
        times: per-stage latency sink (``capture``, ``xyz``); None = not recorded.
        xyz: compute the base-frame XYZ on the robot (False: the observation carries only the depth form, for a
            model that computes the XYZ in its graph).
    """

    def __init__(
        self,
        cameras: Sequence[tuple[Camera, DepthProjector]],
        robot: Robot,
        times: StageTimes | None = None,
        xyz: bool = True,
    ) -> None:
        self.cameras = list(cameras)
        self.robot = robot
        self.times = times if times is not None else StageTimes()
        self.xyz = xyz

    def capture(self) -> Capture:
        """Capture every camera, project to base-frame XYZ, read the robot state (in this order); a camera failure
        is returned as ``Capture.error``, never raised."""
        t0 = time.perf_counter()
        try:
            with self.times.measure("capture"):
                frames = tuple(camera.read() for camera, _ in self.cameras)
        except CameraError as exc:
            return Capture(error=exc, duration_s=time.perf_counter() - t0)
        with self.times.measure("xyz"):
            views = tuple(
                projector.observe(frame, xyz=self.xyz)
                for frame, (_, projector) in zip(frames, self.cameras, strict=True)
            )
        state = self.robot.read_state()
        return Capture(frames, views, state, time.perf_counter() - t0)

    def observe(self, task: str = "") -> Observation:
        """Capture and build the observation; raises the camera's CameraError."""
        captured = self.capture()
        if captured.error is not None:
            raise captured.error
        return captured.observation(task)
