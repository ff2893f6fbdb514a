"""``joint_position`` chunks: actions are absolute joint positions (rad) -> the trajectory directly."""

from __future__ import annotations

import numpy as np

from robot_stack.decoders.base import Decoder
from robot_stack.errors import ShapeError
from robot_stack.robots import panda
from robot_stack.robots.base import JointLimits
from robot_stack.types import ActionChunk, JointTrajectory, RobotState

__all__ = ["JointPositionDecoder"]


class JointPositionDecoder(Decoder):
    """``actions[k]`` = (n,) joint positions in rad for time ``t_obs + latency_offset + k * dt``.

    Args:
        joint_names: joints in action column order (default: the Panda arm).
        limits: if given, positions outside ``[lower, upper]`` are rejected (the safety filter clamps anyway;
            here an out-of-range chunk signals a mis-normalised model).
        latency_offset_s: added to every step time, seconds.
    """

    action_space = "joint_position"

    def __init__(
        self,
        joint_names: tuple[str, ...] = panda.ARM_JOINTS,
        limits: JointLimits | None = None,
        latency_offset_s: float = 0.0,
    ) -> None:
        self.joint_names = tuple(joint_names)
        self.limits = limits
        self.latency_offset_ns = round(latency_offset_s * 1e9)

    def decode(self, chunk: ActionChunk, state: RobotState) -> JointTrajectory:
        self._check_space(chunk)
        return self._trajectory(chunk, self._joint_actions(chunk, "positions"))

    def _joint_actions(self, chunk: ActionChunk, what: str) -> np.ndarray:
        """The chunk's actions as (horizon, n) float64 rad; ShapeError naming ``what`` they are if not."""
        n = len(self.joint_names)
        actions = np.asarray(chunk.actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != n:
            raise ShapeError(f"{self.action_space} chunk: expected (horizon, {n}) {what} in rad, got {actions.shape}")
        return actions

    def _trajectory(self, chunk: ActionChunk, positions: np.ndarray) -> JointTrajectory:
        """The trajectory through ``positions`` ((horizon, n) absolute, rad) at the chunk's step times (plus the
        latency offset), with the chunk's gripper clipped to [0, 1]; ShapeError for non-finite or (with limits)
        out-of-range positions."""
        if not np.all(np.isfinite(positions)):
            raise ShapeError(f"{self.action_space} chunk: actions contain NaN/Inf")
        if self.limits is not None:
            bad = (positions < self.limits.lower) | (positions > self.limits.upper)
            if np.any(bad):
                k, j = (int(i) for i in np.argwhere(bad)[0])
                raise ShapeError(
                    f"{self.action_space} chunk: step {k} joint {self.joint_names[j]} = {positions[k, j]:.3f} rad is "
                    f"outside [{self.limits.lower[j]:.3f}, {self.limits.upper[j]:.3f}]; check the model's "
                    "action normalisation"
                )
        gripper = None if chunk.gripper is None else np.clip(np.asarray(chunk.gripper, np.float64), 0.0, 1.0)
        return JointTrajectory(self.joint_names, chunk.step_times_ns() + self.latency_offset_ns, positions, gripper)
