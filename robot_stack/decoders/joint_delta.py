"""``joint_delta`` chunks: joint displacements from the observed configuration -> absolute joint trajectory.

``actions[k]`` ((n,) rad) is the target joint position at step ``k`` minus ``state.q`` (the configuration in the
chunk's observation), cumulative like ``ee_delta_xyz``. The absolute targets are then decoded as by
:class:`~robot_stack.decoders.joint.JointPositionDecoder` (same limits check, same timing).
"""

from __future__ import annotations

import numpy as np

from robot_stack.decoders.joint import JointPositionDecoder
from robot_stack.errors import ShapeError
from robot_stack.types import ActionChunk, JointTrajectory, RobotState

__all__ = ["JointDeltaDecoder"]


class JointDeltaDecoder(JointPositionDecoder):
    """``actions[k]`` = (n,) joint displacement in rad from ``state.q``, for ``t_obs + latency_offset + k * dt``.

    Args: as :class:`~robot_stack.decoders.joint.JointPositionDecoder` (limits apply to the absolute targets).
    """

    action_space = "joint_delta"

    def decode(self, chunk: ActionChunk, state: RobotState) -> JointTrajectory:
        self._check_space(chunk)
        n = len(self.joint_names)
        q = np.asarray(state.q, dtype=np.float64)
        if q.shape != (n,) or not np.all(np.isfinite(q)):
            raise ShapeError(f"joint_delta: state.q must be finite ({n},) rad, got shape {q.shape}")
        return self._trajectory(chunk, q + self._joint_actions(chunk, "displacements"))
