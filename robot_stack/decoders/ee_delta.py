"""``ee_delta_xyz`` chunks: TCP displacements in the base frame -> IK per step -> joint trajectory.

``actions[k]`` (metres, (3,)) is the target TCP position at step ``k`` minus the TCP position observed in the
chunk's observation (``state.ee_pose.translation``), both in the robot base frame. The TCP orientation is the
observed one (``orientation="keep"``), a fixed gripper-pointing-down orientation (``"down"``), or a given
(3, 3) rotation. Each step's IK is warm-started from the previous step's solution (the first from ``state.q``),
so consecutive joint configurations stay on one branch.
"""

from __future__ import annotations

import numpy as np

from robot_stack.decoders.base import Decoder
from robot_stack.errors import ConfigError, DecodeError, ShapeError
from robot_stack.kinematics.ik import PinocchioIK, panda_ik
from robot_stack.kinematics.reach import ReachPolicy, solve_pose_sequence_checked
from robot_stack.types import ActionChunk, JointTrajectory, Pose, RobotState

__all__ = ["R_DOWN", "EeDeltaXyzDecoder"]

#: TCP x along base +x, z (approach) along base -z: the gripper points down (the Panda's HOME_Q orientation).
R_DOWN = np.diag([1.0, -1.0, -1.0])


class EeDeltaXyzDecoder(Decoder):
    """Decode TCP-displacement chunks with inverse kinematics.

    Args:
        ik: kinematics of the arm (default: :func:`~robot_stack.kinematics.ik.panda_ik`).
        orientation: ``"keep"`` (observed TCP orientation), ``"down"`` (:data:`R_DOWN`) or a (3, 3) rotation
            matrix in the base frame.
        latency_offset_s: added to every step time (``t = t_obs + latency_offset + k * dt``), seconds.
        max_iters: IK iterations per step (warm starts make a few enough for policy-sized steps).
        reach: handling of targets the IK cannot hit exactly (neutral-posture restart, best-effort tolerance,
            clamping onto the reachable set, dropping unreachable steps; each logged); default: every step must
            converge or the chunk is rejected.
    """

    action_space = "ee_delta_xyz"

    def __init__(
        self,
        ik: PinocchioIK | None = None,
        orientation: str | np.ndarray = "keep",
        latency_offset_s: float = 0.0,
        max_iters: int = 50,
        reach: ReachPolicy | None = None,
    ) -> None:
        self.ik = ik or panda_ik()
        if isinstance(orientation, str):
            if orientation not in ("keep", "down"):
                raise ConfigError(f"orientation: expected 'keep', 'down' or a (3, 3) rotation, got {orientation!r}")
            self._fixed_r = R_DOWN if orientation == "down" else None
        else:
            self._fixed_r = Pose(orientation, np.zeros(3)).rotation  # validates a proper rotation
        self.orientation = orientation
        self.latency_offset_ns = round(latency_offset_s * 1e9)
        self.max_iters = int(max_iters)
        self.reach = reach

    def decode(self, chunk: ActionChunk, state: RobotState) -> JointTrajectory:
        self._check_space(chunk)
        actions = np.asarray(chunk.actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != 3:
            raise ShapeError(f"ee_delta_xyz chunk: expected (horizon, 3) actions in metres, got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ShapeError("ee_delta_xyz chunk: actions contain NaN/Inf")
        p0 = state.ee_pose.translation
        rotation = state.ee_pose.rotation if self._fixed_r is None else self._fixed_r
        targets = [Pose(rotation, p0 + delta, "base", "tcp") for delta in actions]
        solved = solve_pose_sequence_checked(self.ik, targets, state.q, self.max_iters, "ee_delta_xyz", self.reach)
        positions, kept = solved.positions, solved.kept
        gripper = None if chunk.gripper is None else np.clip(np.asarray(chunk.gripper, np.float64), 0.0, 1.0)[kept]
        t_ns = (chunk.step_times_ns() + self.latency_offset_ns)[kept]
        try:
            return JointTrajectory(self.ik.joint_names, t_ns, positions, gripper)
        except ShapeError as exc:  # e.g. dt so small that step times collide
            raise DecodeError(f"ee_delta_xyz: could not build the trajectory: {exc}") from exc
