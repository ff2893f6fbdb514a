"""Leader arm: a second arm (or any joint-space source) whose joint positions the follower tracks."""

from __future__ import annotations

import numpy as np

from robot_stack.errors import ShapeError
from robot_stack.robots.base import Robot
from robot_stack.teleop.base import TeleopDevice
from robot_stack.types import ActionChunk, Observation

__all__ = ["LeaderArm"]


class LeaderArm(TeleopDevice):
    """Joint-space teleop: the follower's target is the leader's joint positions (``joint_position`` chunks).

    Args:
        leader: anything implementing :class:`~robot_stack.robots.base.Robot` ``read_state`` (a real leader arm's
            driver, a ROS joint-state bridge, :class:`~robot_stack.sim.kinematic.KinematicRobot` in tests).
        offset_rad: (n,) added to the leader's joints (calibration between leader and follower), rad.
        period_s: chunk dt: the follower reaches the leader's pose this much later.
    """

    name = "leader"

    def __init__(self, leader: Robot, offset_rad: np.ndarray | None = None, period_s: float = 0.05) -> None:
        self.leader = leader
        n = len(leader.joint_names)
        self.offset = np.zeros(n) if offset_rad is None else np.asarray(offset_rad, dtype=np.float64)
        if self.offset.shape != (n,):
            raise ShapeError(f"LeaderArm.offset_rad: expected ({n},) rad, got {self.offset.shape}")
        self.period_s = float(period_s)

    def command(self, obs: Observation) -> ActionChunk:
        st = self.leader.read_state()
        q = np.clip(st.q + self.offset, self.leader.limits.lower, self.leader.limits.upper)
        return ActionChunk(
            obs.t_obs_ns,
            self.period_s,
            np.stack([obs.state.q, q, q]).astype(np.float32),  # reach the leader's pose, end at rest
            "joint_position",
            np.full(3, st.gripper, np.float32),
            self.name,
        )
