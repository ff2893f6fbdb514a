"""``SimRobot``: the :class:`~robot_stack.robots.base.Robot` interface over a :class:`SimWorld` Panda."""

from __future__ import annotations

import logging

import numpy as np

from robot_stack.errors import SafetyError, ShapeError
from robot_stack.robots import panda
from robot_stack.robots.base import JointLimits, Robot
from robot_stack.sim.world import SimWorld
from robot_stack.types import RobotState

log = logging.getLogger("robot_stack.sim")

__all__ = ["SimRobot"]

#: Slack on the joint position limits when validating commands, rad (absorbs float round-off only).
_LIMIT_TOLERANCE_RAD = 1e-6


class SimRobot(Robot):
    """A simulated Panda: joint position set-points go to the MuJoCo position servos of ``world``.

    Every call first syncs the world to ``world.clock.now_ns()``, so the previous set-point has been applied for
    the time that passed. Commands are validated, never clamped: a wrong shape raises
    :class:`~robot_stack.errors.ShapeError`, non-finite values or targets outside the joint limits or a gripper
    opening outside [0, 1] raise :class:`~robot_stack.errors.SafetyError` (and :attr:`rejected` counts them).

    Args:
        world: the simulated cell (shared with cameras).
    """

    def __init__(self, world: SimWorld) -> None:
        self.world = world
        self.rejected = 0

    @property
    def joint_names(self) -> tuple[str, ...]:
        return panda.ARM_JOINTS

    @property
    def limits(self) -> JointLimits:
        return panda.LIMITS

    def read_state(self) -> RobotState:
        """State at ``clock.now_ns()``: q, dq (7,) rad and rad/s, ``T_base_tcp`` (parent "base", child "tcp")."""
        world = self.world
        with world.lock:
            t_ns = world.sync_now()
            return RobotState(
                t_ns=t_ns,
                q=world.arm_q(),
                dq=world.arm_dq(),
                ee_pose=world.tcp_pose(),
                gripper=world.gripper_opening(),
            )

    def _validate(self, q: np.ndarray, gripper: float | None) -> np.ndarray:
        target = np.asarray(q, dtype=np.float64)
        if target.shape != (len(panda.ARM_JOINTS),):
            raise ShapeError(
                f"SimRobot.command: q must have shape ({len(panda.ARM_JOINTS)},) in {panda.ARM_JOINTS} order, "
                f"got {target.shape}"
            )
        if not np.all(np.isfinite(target)):
            raise SafetyError(f"SimRobot.command: q contains NaN/Inf ({target}); refusing the set-point")
        lim = panda.LIMITS
        outside = (target < lim.lower - _LIMIT_TOLERANCE_RAD) | (target > lim.upper + _LIMIT_TOLERANCE_RAD)
        if np.any(outside):
            bad = ", ".join(
                f"{panda.ARM_JOINTS[i]}={target[i]:.4f} not in [{lim.lower[i]:.4f}, {lim.upper[i]:.4f}]"
                for i in np.flatnonzero(outside)
            )
            raise SafetyError(f"SimRobot.command: joint target outside limits ({bad}); clamp upstream (safety filter)")
        if gripper is not None and not (np.isfinite(gripper) and 0.0 <= gripper <= 1.0):
            raise SafetyError(f"SimRobot.command: gripper opening must be finite in [0, 1], got {gripper}")
        return np.clip(target, lim.lower, lim.upper)

    def command_at(self, t_ns: int, q: np.ndarray, gripper: float | None = None) -> None:
        """Like :meth:`command`, but the set-point takes effect at clock time ``t_ns`` (the world is stepped to
        ``t_ns`` first; a time the world has already passed applies it now). Used by
        :class:`~robot_stack.control.setpoints.SetpointRelay` to replay a real-time process's set-points at the
        times they were sent, and by the executor, which passes each set-point's tick time."""
        self._apply(q, gripper, int(t_ns))

    def command(self, q: np.ndarray, gripper: float | None = None) -> None:
        """Set the servo targets: ``q`` (7,) float64 rad, ``gripper`` opening in [0, 1] (None = unchanged)."""
        self._apply(q, gripper, None)

    def _apply(self, q: np.ndarray, gripper: float | None, t_ns: int | None) -> None:
        try:
            target = self._validate(q, gripper)
        except (ShapeError, SafetyError):
            self.rejected += 1
            raise
        world = self.world
        with world.lock:
            if t_ns is None:
                world.sync_now()
            else:
                world.sync(t_ns)
            world.set_ctrl(target, gripper)
