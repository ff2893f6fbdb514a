"""The teleop interface: a device maps the latest observation to an :class:`~robot_stack.types.ActionChunk`.

A teleop command is *the same value a policy returns*, so it takes exactly the path a policy's action takes: a
decoder from the registry (``ee_delta_xyz`` → pinocchio IK via ``solve_pose_sequence_checked``; ``joint_position``
→ the trajectory directly) → :class:`~robot_stack.control.executor.Executor` (500 Hz, watchdog) →
:class:`~robot_stack.control.safety.SafetyFilter` → robot. Nothing here talks to a robot directly.

End-effector devices (keyboard jog, SpaceMouse) command TCP *positions* (``ee_delta_xyz``, gripper pointing down as
the demo's decoder does); the leader arm commands joints (``joint_position``); the scripted expert emits the
planner's chunks.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from robot_stack.decoders.base import Decoder
from robot_stack.decoders.ee_delta import EeDeltaXyzDecoder
from robot_stack.decoders.joint import JointPositionDecoder
from robot_stack.errors import DecodeError
from robot_stack.kinematics.ik import ik_for
from robot_stack.kinematics.reach import ReachPolicy
from robot_stack.robots.registry import get_embodiment
from robot_stack.types import ActionChunk, JointTrajectory, Observation, RobotState

log = logging.getLogger("robot_stack.teleop")

__all__ = ["EeTargetJog", "TeleopDecoder", "TeleopDevice", "ee_jog_chunk"]


class TeleopDevice(ABC):
    """An operator (human through a device, or scripted). Call it like a policy: ``chunk = device(obs)``.

    Attributes:
        name: short device name written into each recorded episode (``"keyboard"``, ``"spacemouse"``, ...).
        period_s: seconds between commands the device is designed for (its chunk ``dt``).
    """

    name: str = "teleop"
    period_s: float = 0.1

    def start(self) -> None:  # noqa: B027 - optional hook
        """Open the device. Idempotent."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Release the device. Idempotent."""

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget per-episode state (called at the start of every episode)."""

    @abstractmethod
    def command(self, obs: Observation) -> ActionChunk | None:
        """The command for observation ``obs``; None = nothing new (the hold chunk of :meth:`__call__` is used)."""

    def __call__(self, obs: Observation) -> ActionChunk:
        chunk = self.command(obs)
        return chunk if chunk is not None else ee_jog_chunk(obs, np.zeros(3), None, self.period_s, self.name)


def ee_jog_chunk(
    obs: Observation, displacement_m: np.ndarray, gripper: float | None, dt_s: float, model_id: str
) -> ActionChunk:
    """``ee_delta_xyz`` chunk of horizon 3: here now, ``displacement_m`` (3,) metres (base frame) further after
    ``dt_s`` and still there one ``dt_s`` later (so the trajectory ends at rest). ``gripper`` in [0, 1] or None."""
    d = np.asarray(displacement_m, dtype=np.float32).reshape(3)
    g = None if gripper is None else np.full(3, float(np.clip(gripper, 0.0, 1.0)), np.float32)
    return ActionChunk(obs.t_obs_ns, dt_s, np.stack([np.zeros(3, np.float32), d, d]), "ee_delta_xyz", g, model_id)


class EeTargetJog:
    """A TCP position target moved by jog inputs (base frame, metres), initialised at the TCP on first use.

    Chunks always aim at the target (not at "current TCP + step"), so an arm lagging behind keeps converging and an
    idle device holds the last target. ``max_lead_m`` bounds how far the target may run ahead of the TCP.
    """

    def __init__(self, max_lead_m: float = 0.05) -> None:
        self.max_lead_m = float(max_lead_m)
        self.target: np.ndarray | None = None

    def reset(self) -> None:
        self.target = None

    def step(self, obs: Observation, displacement_m: np.ndarray) -> np.ndarray:
        """Move the target by ``displacement_m`` (3,) m; return target - TCP (3,) m."""
        tcp = np.asarray(obs.state.ee_pose.translation, np.float64)
        if self.target is None:
            self.target = tcp.copy()
        self.target = self.target + np.asarray(displacement_m, np.float64).reshape(3)
        lead = self.target - tcp
        dist = float(np.linalg.norm(lead))
        if dist > self.max_lead_m:
            self.target = tcp + lead * (self.max_lead_m / dist)
        return self.target - tcp


class TeleopDecoder(Decoder):
    """Decodes what teleop devices emit with the stack's own decoders, chosen by ``chunk.action_space``.

    Args:
        decoders: {action_space: decoder}; default: ``ee_delta_xyz`` with the arm's IK, its tool pointing down and
            the demo's reach handling (restarts from its home posture, best effort within 5 mm, floor 5 mm above the
            table), ``joint_position`` with the arm's joints and limits.
        robot: the arm (``panda`` | ``ur5`` | ``so101``) the default decoders are made for.

    Attributes:
        last: the last (chunk, state, trajectory or None when decoding failed) — read by recorders.
    """

    action_space = "teleop"

    def __init__(self, decoders: Mapping[str, Decoder] | None = None, robot: str = "panda") -> None:
        emb = get_embodiment(robot)
        self.decoders = dict(
            decoders
            or {
                "ee_delta_xyz": EeDeltaXyzDecoder(
                    ik=ik_for(emb),
                    orientation=emb.tool_down,
                    reach=ReachPolicy(
                        fallback_q=emb.home_q, best_effort_m=0.005, best_effort_rad=0.05, floor_z_m=0.005
                    ),
                ),
                "joint_position": JointPositionDecoder(emb.arm_joints, limits=emb.limits),
            }
        )
        self.last: tuple[ActionChunk, RobotState, JointTrajectory | None] | None = None

    def decode(self, chunk: ActionChunk, state: RobotState) -> JointTrajectory:
        decoder = self.decoders.get(chunk.action_space)
        if decoder is None:
            raise DecodeError(
                f"teleop chunk in action space {chunk.action_space!r}; this session decodes {sorted(self.decoders)}"
            )
        try:
            traj = decoder.decode(chunk, state)
        except Exception:
            self.last = (chunk, state, None)
            raise
        self.last = (chunk, state, traj)
        return traj
