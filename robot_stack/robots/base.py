"""The robot interface every arm (MuJoCo sim, ROS 2 hardware) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import SafetyError, ShapeError
from robot_stack.types import RobotState

#: Slack on the joint position limits when validating commands, rad (absorbs float round-off only).
LIMIT_TOLERANCE_RAD = 1e-6


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits, arrays of shape (n,) float64.

    Attributes:
        lower, upper: position limits, rad.
        velocity: |dq| limit, rad/s.
        acceleration: |ddq| limit, rad/s^2.
        jerk: |dddq| limit, rad/s^3.
    """

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray

    def __post_init__(self) -> None:
        n = np.asarray(self.lower).shape[0]
        for name in ("lower", "upper", "velocity", "acceleration", "jerk"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            if arr.shape != (n,) or not np.all(np.isfinite(arr)):
                raise ShapeError(f"JointLimits.{name}: expected finite ({n},), got {arr.shape}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if np.any(self.lower >= self.upper):
            raise ShapeError("JointLimits: every lower limit must be below its upper limit")
        if np.any(self.velocity <= 0) or np.any(self.acceleration <= 0) or np.any(self.jerk <= 0):
            raise ShapeError("JointLimits: velocity/acceleration/jerk limits must be positive")

    def tightened(self, margin_rad: float) -> JointLimits:
        """These limits with the position range shrunk by ``margin_rad`` (rad) at each end (what a planner should aim
        inside so the safety filter's margin never has to intervene)."""
        return JointLimits(
            self.lower + margin_rad, self.upper - margin_rad, self.velocity, self.acceleration, self.jerk
        )


class Robot(ABC):
    """A position-controlled arm with a gripper.

    Commands are joint position set-points streamed at control rate; the robot's own servo loop tracks them.
    """

    @property
    @abstractmethod
    def joint_names(self) -> tuple[str, ...]:
        """Names of the arm joints, in the order of every ``q`` array."""

    @property
    @abstractmethod
    def limits(self) -> JointLimits:
        """The arm's joint limits (the safety layer enforces these, tightened by its margins)."""

    @abstractmethod
    def read_state(self) -> RobotState:
        """Current proprioception (joint positions/velocities, TCP pose in the base frame, gripper)."""

    @abstractmethod
    def command(self, q: np.ndarray, gripper: float | None = None) -> None:
        """Send one joint position set-point, (n,) float64 rad, and optionally a gripper opening in [0, 1]."""


def check_command(
    who: str, joint_names: tuple[str, ...], limits: JointLimits, q: np.ndarray, gripper: float | None
) -> np.ndarray:
    """A joint set-point as every robot checks it before sending it: ``q`` as a finite (n,) float64 array inside
    ``limits`` (clipped by at most :data:`LIMIT_TOLERANCE_RAD` of round-off), a gripper opening in [0, 1].

    Raises:
        ShapeError: ``q`` does not have one entry per joint.
        SafetyError: NaN/Inf, a target outside the limits, or a bad gripper opening (nothing is clamped).
    """
    target = np.asarray(q, dtype=np.float64)
    if target.shape != (len(joint_names),):
        raise ShapeError(
            f"{who}.command: q must have shape ({len(joint_names)},) in {joint_names} order, got {target.shape}"
        )
    if not np.all(np.isfinite(target)):
        raise SafetyError(f"{who}.command: q contains NaN/Inf ({target}); refusing the set-point")
    outside = (target < limits.lower - LIMIT_TOLERANCE_RAD) | (target > limits.upper + LIMIT_TOLERANCE_RAD)
    if np.any(outside):
        bad = ", ".join(
            f"{joint_names[i]}={target[i]:.4f} not in [{limits.lower[i]:.4f}, {limits.upper[i]:.4f}]"
            for i in np.flatnonzero(outside)
        )
        raise SafetyError(f"{who}.command: joint target outside limits ({bad}); clamp upstream (safety filter)")
    if gripper is not None and not (np.isfinite(gripper) and 0.0 <= gripper <= 1.0):
        raise SafetyError(f"{who}.command: gripper opening must be finite in [0, 1], got {gripper}")
    return np.clip(target, limits.lower, limits.upper)
