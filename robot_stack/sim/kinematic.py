"""A kinematic twin of an arm (the Panda by default): tracks every command perfectly. For tests and benchmarks.

``q`` is the last commanded set-point, ``dq`` the finite difference of the last two commands over the clock time
between them, and the TCP pose comes from :class:`~robot_stack.kinematics.ik.PinocchioIK` forward kinematics (the
same URDF the MuJoCo simulator loads).
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from robot_stack.clock import Clock, MonotonicClock
from robot_stack.errors import RobotError
from robot_stack.kinematics.ik import PinocchioIK, ik_for
from robot_stack.robots.base import JointLimits, Robot
from robot_stack.robots.registry import get_embodiment
from robot_stack.types import RobotState

__all__ = ["KinematicRobot"]


class KinematicRobot(Robot):
    """Perfect position tracking, no dynamics.

    Args:
        ik: kinematics for the TCP pose (default: the IK of ``robot``).
        q0: (n,) initial joint positions, rad (default: the robot's home posture).
        clock: time source for ``t_ns`` and velocity differences (default: ``MonotonicClock``).
        limits: joint limits reported to the safety layer (default: the robot's).
        history: keep the last ``history`` commands as ``(t_ns, q, gripper)`` in :attr:`commands` (0 = none).
        robot: the arm model (``panda`` | ``ur5`` | ``so101``) whose description gives the defaults.
    """

    def __init__(
        self,
        ik: PinocchioIK | None = None,
        q0: np.ndarray | None = None,
        clock: Clock | None = None,
        limits: JointLimits | None = None,
        history: int = 0,
        robot: str = "panda",
    ) -> None:
        embodiment = get_embodiment(robot)
        self.ik = ik or ik_for(embodiment)
        self.clock: Clock = clock or MonotonicClock()
        self._limits = limits or embodiment.limits
        q = np.array(embodiment.home_q if q0 is None else q0, dtype=np.float64)
        if q.shape != (self.ik.nq,) or not np.all(np.isfinite(q)):
            raise RobotError(f"KinematicRobot.q0: expected finite ({self.ik.nq},) rad, got {q!r}")
        self._q = q
        self._dq = np.zeros_like(q)
        self._gripper = 1.0
        self._t_last: int | None = None
        self._lock = threading.Lock()
        self.commands: deque[tuple[int, np.ndarray, float | None]] = deque(maxlen=history or None)
        self._history = history
        self.n_commands = 0

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.ik.joint_names

    @property
    def limits(self) -> JointLimits:
        return self._limits

    def read_state(self) -> RobotState:
        with self._lock:
            q, dq, gripper = self._q.copy(), self._dq.copy(), self._gripper
        return RobotState(self.clock.now_ns(), q, dq, self.ik.fk(q), gripper)

    def command(self, q: np.ndarray, gripper: float | None = None) -> None:
        arr = np.asarray(q, dtype=np.float64)
        if arr.shape != self._q.shape or not np.all(np.isfinite(arr)):
            raise RobotError(
                f"KinematicRobot.command: expected finite ({self._q.shape[0]},) rad, got shape {arr.shape}"
            )
        if gripper is not None and not (0.0 <= gripper <= 1.0):
            raise RobotError(f"KinematicRobot.command: gripper opening must be in [0, 1], got {gripper}")
        now = self.clock.now_ns()
        with self._lock:
            if self._t_last is not None and now > self._t_last:
                self._dq = (arr - self._q) / ((now - self._t_last) * 1e-9)
            self._q = arr.copy()
            self._t_last = now
            if gripper is not None:
                self._gripper = float(gripper)
            self.n_commands += 1
            if self._history:
                self.commands.append((now, self._q.copy(), gripper))
