"""A Franka Emika Panda (FR3 alike) through ``pylibfranka`` (Franka's Python bindings of libfranka).

Command mode: joint-position control with the joint-impedance controller
(``Robot.start_joint_position_control(ControllerMode.JointImpedance)``). libfranka demands a command every 1 ms
(``readOnce`` blocks until the next robot state; a late ``writeOnce`` stops the robot with a
``communication_constraints_violation`` reflex), so the adapter runs that loop in its own thread at 1 kHz and our
executor's set-points (500 Hz-1 kHz) are interpolated into it: when a set-point arrives, the loop moves on a
straight line from where it is to the new set-point over one set-point period (a one-period delay that keeps the
1 kHz stream continuous: no jump when a set-point arrives). Run the loop's thread on a real-time kernel
(``realtime=True``: libfranka's ``kEnforce``) for production. Limits: the Panda description's (Franka Control
Interface datasheet: position, velocity, acceleration, jerk per joint); libfranka's motion generator limits apply
on top.

Units and frames: joint angles in rad (the URDF's); ``O_T_EE`` (column-major 4x4) is the flange-to-EE pose
configured in Desk — with the Franka Hand it is the fingertip centre, the description's ``panda_hand_tcp``. The
gripper (``pylibfranka.Gripper``: blocking ``move(width, speed)``) runs in its own worker thread, latest target
wins; opening = width / max width (0.08 m).

Not covered without an arm: the real loop timing, reflexes and the gripper (``pytest -m hardware`` with
``ROBOT_STACK_FRANKA_HOST`` runs the live checks).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from robot_stack.arms.base import VendorArm, import_vendor
from robot_stack.clock import Clock
from robot_stack.errors import ConfigError, RobotError
from robot_stack.robots import panda
from robot_stack.robots.embodiment import Embodiment
from robot_stack.types import Pose, RobotState

log = logging.getLogger("robot_stack.arms.franka")

__all__ = ["LOOP_RATE_HZ", "FrankaArm", "connect", "pose_from_o_t_ee"]

#: libfranka's control rate, Hz.
LOOP_RATE_HZ = 1000.0
_INSTALL = "pip install pylibfranka==0.21.3 (the robot's system firmware must match libfranka 0.21)"


def pose_from_o_t_ee(o_t_ee: Any) -> Pose:
    """``T_base_tcp`` from libfranka's ``O_T_EE``: 16 numbers, a 4x4 homogeneous matrix in column-major order."""
    m = np.asarray(o_t_ee, dtype=np.float64)
    if m.shape != (16,) or not np.all(np.isfinite(m)):
        raise RobotError(f"Franka O_T_EE: expected 16 finite numbers (column-major 4x4), got {o_t_ee!r}")
    return Pose.from_matrix(m.reshape(4, 4, order="F"), "base", "tcp")


class FrankaArm(VendorArm):
    """A Panda in libfranka's 1 kHz joint-position loop (see the module docstring).

    Args:
        robot: a connected ``pylibfranka.Robot`` (or an object with ``read_once``, ``start_joint_position_control``,
            ``stop``).
        franka: the ``pylibfranka`` module (its ``JointPositions`` and ``ControllerMode``).
        gripper: a ``pylibfranka.Gripper`` or None (no hand).
        embodiment: the arm's description (default the Panda).
        clock: state timestamps.
    """

    def __init__(
        self,
        robot: Any,
        franka: Any,
        gripper: Any = None,
        embodiment: Embodiment = panda.EMBODIMENT,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(embodiment, clock)
        self.robot = robot
        self.franka = franka
        self.gripper = gripper
        first = robot.read_once()
        q0 = self._q(first.q)
        self._lock = threading.Lock()
        self._state = first
        self._prev = (time.monotonic(), q0)  # (monotonic s, q) of the previous set-point
        self._last = (time.monotonic(), q0)
        self._error: str | None = None
        self._stop = threading.Event()
        self.loop_cycles = 0
        self._grip_target: float | None = None
        self._grip_event = threading.Event()
        self._loop = threading.Thread(target=self._run, name="franka-1khz", daemon=True)
        self._loop.start()
        self._grip_thread = None
        if gripper is not None:
            self._grip_thread = threading.Thread(target=self._run_gripper, name="franka-gripper", daemon=True)
            self._grip_thread.start()

    def _q(self, values: Any) -> np.ndarray:
        q = np.asarray(values, dtype=np.float64)
        if q.shape != (self.embodiment.dof,) or not np.all(np.isfinite(q)):
            raise RobotError(f"Franka reported joints {values!r}; expected {self.embodiment.dof} finite angles")
        return q

    # ---------------------------------------------------------------------------------------------- 1 kHz loop
    def target_at(self, t_s: float) -> np.ndarray:
        """The joint target (rad) the loop sends at monotonic time ``t_s``: along the segment from where the loop was
        when the newest set-point arrived to that set-point, over one set-point period."""
        with self._lock:
            (t0, q0), (t1, q1) = self._prev, self._last
        period = t1 - t0
        if period <= 0.0:
            return q1.copy()
        alpha = min(max((t_s - t1) / period, 0.0), 1.0)
        return q0 + alpha * (q1 - q0)

    def _run(self) -> None:
        try:
            control = self.robot.start_joint_position_control(self.franka.ControllerMode.JointImpedance)
            while not self._stop.is_set():
                state, _ = control.readOnce()  # blocks until the robot's next 1 ms cycle
                with self._lock:
                    self._state = state
                control.writeOnce(self.franka.JointPositions(self.target_at(time.monotonic()).tolist()))
                self.loop_cycles += 1
        except Exception as exc:  # a reflex (ControlException), network loss: the arm has stopped itself
            self._error = f"{type(exc).__name__}: {exc}"
            log.error("Franka control loop stopped: %s", self._error)

    def _run_gripper(self) -> None:
        while not self._stop.is_set():
            if not self._grip_event.wait(0.1):
                continue
            self._grip_event.clear()
            target = self._grip_target
            if target is None:
                continue
            try:
                width = target * 2 * panda.FINGER_MAX_OPENING_M
                self.gripper.move(width, 0.1)  # m, m/s; blocks until the fingers stop
            except Exception:
                log.exception("Franka gripper move to %.3f m failed", target * 2 * panda.FINGER_MAX_OPENING_M)

    # --------------------------------------------------------------------------------------------- Robot
    def _check(self) -> None:
        if self._error is not None:
            raise RobotError(
                f"Franka control loop stopped ({self._error}); clear the reflex (automatic_error_recovery or Desk) and "
                "connect again"
            )
        if self._stop.is_set():
            raise RobotError("FrankaArm: closed; connect again")

    def read_state(self) -> RobotState:
        """The latest 1 kHz robot state: q, dq (rad, rad/s), ``O_T_EE``, the gripper opening."""
        self._check()
        with self._lock:
            state = self._state
        opening = 1.0
        if self.gripper is not None:
            g = self.gripper.read_once()
            opening = float(np.clip(g.width / max(g.max_width, 1e-6), 0.0, 1.0))
        return RobotState(
            self.clock.now_ns(), self._q(state.q), self._q(state.dq), pose_from_o_t_ee(state.O_T_EE), opening
        )

    def command(self, q: np.ndarray, gripper: float | None = None) -> None:
        """A joint set-point (rad) for the 1 kHz loop; a gripper opening in [0, 1] for the gripper worker."""
        target = self.validate(q, gripper)
        self._check()
        now = time.monotonic()
        current = self.target_at(now)  # start the new segment where the loop is now: no jump at a new set-point
        with self._lock:
            self._prev = (self._last[0], current) if now > self._last[0] else self._prev
            self._last = (now, target)
        if gripper is not None and self.gripper is not None and gripper != self._grip_target:
            self._grip_target = float(gripper)
            self._grip_event.set()
        self.commands += 1

    def close(self) -> None:
        """Leave the control loop (the robot holds) and stop the robot's motion generators."""
        self._stop.set()
        self._loop.join(1.0)
        try:
            self.robot.stop()
        except Exception:
            log.exception("Franka stop failed")


def connect(host: str, realtime: bool = True, gripper: bool = True) -> FrankaArm:
    """Connect to the Panda's controller (FCI) at ``host`` and start the 1 kHz loop (``robot.factory``).

    Args:
        host: the control box's IP address (FCI enabled in Desk).
        realtime: enforce libfranka's real-time scheduling (``kEnforce``; needs an RT kernel); False = ``kIgnore``.
        gripper: also connect the Franka Hand.

    Raises:
        RobotError: pylibfranka is missing or the controller cannot be reached (the message says what to check).
    """
    franka = import_vendor("pylibfranka", "pylibfranka", _INSTALL)
    if not host:
        raise ConfigError("franka.connect: host is empty; set robot.options.host to the control box's IP address")
    config = franka.RealtimeConfig.kEnforce if realtime else franka.RealtimeConfig.kIgnore
    try:
        robot = franka.Robot(host, config)
        hand = franka.Gripper(host) if gripper else None
    except (franka.NetworkException, franka.RealtimeException, franka.FrankaException, RuntimeError) as exc:
        raise RobotError(
            f"cannot connect to the Franka controller at {host} ({type(exc).__name__}: {exc}); check the IP, that FCI "
            "is enabled in Desk, the brakes are open, and (realtime=True) that this computer runs a real-time kernel"
        ) from exc
    return FrankaArm(robot, franka, hand)
