"""A Universal Robots arm through ``ur-rtde`` (SDU Robotics' RTDE client: ``rtde_control``, ``rtde_receive``).

Command mode: ``servoJ`` — a joint position set-point per executor tick, which the controller tracks with its own
servo loop (``lookahead_time`` smooths, ``gain`` stiffens). Send them at the controller's cycle: the description's
``control_rate_hz`` (125 Hz for a CB3 UR5; a UR5e/e-Series runs 500 Hz: ``--set control.rate_hz=500``). The
``time`` argument of every ``servoJ`` is one executor period. Limits: the UR5 description's (joints restricted to
+-180 deg, 180 deg/s; see :mod:`robot_stack.robots.ur5`); the controller's own safety configuration applies on top.

Frames and units: joint angles are the URDF's (radians, same zero as the controller). The controller reports the
TCP in UR's ``base`` frame, which is the URDF's ``base_link`` turned 180 deg about z: :func:`tcp_from_rtde` turns
an RTDE pose ``[x, y, z, rx, ry, rz]`` (metres, axis-angle) into ``T_base_tcp`` of the robot-stack base frame
(``base_link``). The adapter sets the controller's TCP offset to the description's (6 cm out of the flange: the
prong tips), so the reported TCP is the IK's.

Not covered without an arm: the servo behaviour itself and protective stops (``pytest -m hardware`` with
``ROBOT_STACK_UR_HOST`` set runs the live checks).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.arms.base import VendorArm, import_vendor
from robot_stack.clock import Clock
from robot_stack.errors import ConfigError, RobotError
from robot_stack.geometry import so3_exp
from robot_stack.robots import ur5
from robot_stack.robots.embodiment import Embodiment
from robot_stack.types import Pose, RobotState

log = logging.getLogger("robot_stack.arms.ur")

__all__ = ["RTDE_PORT", "ServoJConfig", "URArm", "connect", "rtde_from_tcp", "tcp_from_rtde"]

#: The controller's RTDE port (what a refused connection names).
RTDE_PORT = 30004
#: ``base`` (UR controller) -> ``base_link`` (URDF, robot-stack's base frame): 180 deg about z.
R_BASELINK_BASE = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class ServoJConfig:
    """``servoJ`` parameters (ur_rtde's ranges).

    Attributes:
        rate_hz: set-points per second (the executor's rate; ``time`` of each servoJ = 1 / rate_hz).
        lookahead_time_s: smoothing look-ahead, seconds, in [0.03, 0.2].
        gain: proportional gain of the controller's tracking, in [100, 2000].
        stop_deceleration: deceleration of ``servoStop`` when the adapter closes, rad/s^2.
    """

    rate_hz: float = 125.0
    lookahead_time_s: float = 0.1
    gain: float = 300.0
    stop_deceleration: float = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_hz) and 10.0 <= self.rate_hz <= 500.0):
            raise ConfigError(
                f"ServoJConfig.rate_hz: the controller takes 10..500 Hz (CB3 125, e-Series 500), got {self.rate_hz}"
            )
        if not 0.03 <= self.lookahead_time_s <= 0.2:
            raise ConfigError(
                f"ServoJConfig.lookahead_time_s: ur_rtde accepts 0.03..0.2 s, got {self.lookahead_time_s}"
            )
        if not 100.0 <= self.gain <= 2000.0:
            raise ConfigError(f"ServoJConfig.gain: ur_rtde accepts 100..2000, got {self.gain}")
        if not self.stop_deceleration > 0:
            raise ConfigError(f"ServoJConfig.stop_deceleration: expected rad/s^2 > 0, got {self.stop_deceleration}")


def tcp_from_rtde(pose: Any) -> Pose:
    """``T_base_tcp`` (robot-stack base frame = URDF ``base_link``) of an RTDE pose ``[x, y, z, rx, ry, rz]``
    (metres and an axis-angle rotation vector, in UR's ``base`` frame)."""
    p = np.asarray(pose, dtype=np.float64)
    if p.shape != (6,) or not np.all(np.isfinite(p)):
        raise RobotError(f"UR TCP pose: expected 6 finite numbers [x, y, z, rx, ry, rz], got {pose!r}")
    return Pose(R_BASELINK_BASE @ so3_exp(p[3:]), R_BASELINK_BASE @ p[:3], "base", "tcp")


def rtde_from_tcp(pose: Pose) -> list[float]:
    """The inverse of :func:`tcp_from_rtde`: ``[x, y, z, rx, ry, rz]`` in UR's ``base`` frame."""
    from scipy.spatial.transform import Rotation

    rot = R_BASELINK_BASE.T @ pose.rotation
    xyz = R_BASELINK_BASE.T @ pose.translation
    return [*map(float, xyz), *map(float, Rotation.from_matrix(rot).as_rotvec())]


class URArm(VendorArm):
    """A UR arm driven by ``servoJ`` (see the module docstring).

    Args:
        control: a connected ``rtde_control.RTDEControlInterface`` (or an object with its methods).
        receive: a connected ``rtde_receive.RTDEReceiveInterface``.
        servo: ``servoJ`` parameters.
        embodiment: the arm's description (default the UR5).
        clock: state timestamps.
    """

    def __init__(
        self,
        control: Any,
        receive: Any,
        servo: ServoJConfig | None = None,
        embodiment: Embodiment = ur5.EMBODIMENT,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(embodiment, clock)
        self.control = control
        self.receive = receive
        self.servo = servo or ServoJConfig(rate_hz=embodiment.control_rate_hz)
        self._lock = threading.Lock()
        self._closed = False
        if embodiment.tcp_offset is not None:
            offset = [*map(float, embodiment.tcp_offset[1]), 0.0, 0.0, 0.0]
            if not self.control.setTcp(offset):
                raise RobotError(f"UR controller refused the TCP offset {offset}; check the robot is in remote control")

    def _check_connected(self) -> None:
        if self._closed:
            raise RobotError("URArm: closed; connect again")
        if not (self.receive.isConnected() and self.control.isConnected()):
            raise RobotError("UR controller: RTDE connection lost; check the network and the robot's remote control")

    def read_state(self) -> RobotState:
        """Joint positions and velocities (rad, rad/s), the TCP (base_link frame) from the controller."""
        with self._lock:
            self._check_connected()
            q = np.asarray(self.receive.getActualQ(), np.float64)
            dq = np.asarray(self.receive.getActualQd(), np.float64)
            tcp = tcp_from_rtde(self.receive.getActualTCPPose())
        if q.shape != (self.embodiment.dof,) or dq.shape != q.shape:
            raise RobotError(
                f"UR controller reported {q.shape} joints; the {self.embodiment.name} has {self.embodiment.dof}"
            )
        return RobotState(self.clock.now_ns(), q, dq, tcp, 1.0)

    def command(self, q: np.ndarray, gripper: float | None = None) -> None:
        """One ``servoJ`` set-point (rad); the rigid tool ignores ``gripper`` (validated all the same)."""
        target = self.validate(q, gripper)
        cfg = self.servo
        with self._lock:
            self._check_connected()
            ok = self.control.servoJ(target.tolist(), 0.0, 0.0, 1.0 / cfg.rate_hz, cfg.lookahead_time_s, cfg.gain)
        if ok is False:
            raise RobotError(
                "UR controller rejected servoJ (protective stop, or the control script stopped); check the pendant"
            )
        self.commands += 1

    def close(self) -> None:
        """Stop servoing (decelerate), stop the control script, disconnect both interfaces."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for step in (
                lambda: self.control.servoStop(self.servo.stop_deceleration),
                self.control.stopScript,
                self.control.disconnect,
                self.receive.disconnect,
            ):
                try:
                    step()
                except Exception:  # every step runs even if one fails
                    log.exception("UR shutdown step failed")


def connect(
    host: str,
    rate_hz: float | None = None,
    lookahead_time_s: float = 0.1,
    gain: float = 300.0,
    model: str = "ur5",
) -> URArm:
    """Connect to the UR controller at ``host`` (RTDE port 30004) and return the arm (``robot.factory``).

    Raises:
        RobotError: ur-rtde is missing, or the controller cannot be reached (the message says what to check).
        ConfigError: servo parameters out of ur_rtde's ranges, or ``model`` is not a UR description.
    """
    from robot_stack.robots.registry import get_embodiment

    embodiment = get_embodiment(model)
    if not embodiment.name.startswith("ur"):
        raise ConfigError(f"ur_rtde.connect: model {model!r} is not a Universal Robots arm")
    servo = ServoJConfig(rate_hz or embodiment.control_rate_hz, lookahead_time_s, gain)
    rtde_control = import_vendor("rtde_control", "ur-rtde", "pip install ur-rtde==1.6.5")
    rtde_receive = import_vendor("rtde_receive", "ur-rtde", "pip install ur-rtde==1.6.5")
    if not host:
        raise ConfigError("ur_rtde.connect: host is empty; set robot.options.host to the controller's IP address")
    receive = None
    try:
        receive = rtde_receive.RTDEReceiveInterface(host, servo.rate_hz)
        control = rtde_control.RTDEControlInterface(host, servo.rate_hz)
    except RuntimeError as exc:
        if receive is not None:
            receive.disconnect()
        raise RobotError(
            f"cannot reach the UR controller at {host}:{RTDE_PORT} ({exc}); check the IP address, the network, "
            "that the robot is powered on and in remote control, and that no other RTDE client holds it"
        ) from exc
    return URArm(control, receive, servo, embodiment)
