"""An SO-100 / SO-101 follower arm through LeRobot's own follower class (``lerobot.robots.so_follower``).

LeRobot pins its own torch (< 2.11 for 0.4.4), so it is not a robot-stack dependency: install it on the robot
computer (``pip install lerobot==0.4.4`` in the environment that runs the robot side) and this module imports it
only when :func:`connect` runs. The adapter wraps whatever follower object it is given (LeRobot's ``SOFollower``
or anything with the same API: ``connect``, ``is_connected``, ``get_observation``, ``send_action``,
``disconnect``), so it is tested here against a fake of that API read from the lerobot 0.4.4 source.

Command mode: ``send_action({"<motor>.pos": ...})`` writes ``Goal_Position`` of the six STS3215 servos over the
Feetech bus (``sync_write``); each servo closes its own position loop. Rate: the description's 100 Hz (a sync
read + write of six servos at 1 Mbit/s takes ~2 ms; LeRobot itself records at 30 Hz). The follower's own
``max_relative_target`` (degrees per command) may clip a command; the adapter counts and logs every clip.

Units (LeRobot 0.4.4, ``use_degrees=True``, the "new calibration" the so101.urdf follows): the five arm motors
report and take **degrees**, zero at the middle of each calibrated range — the URDF's joint angle in degrees
(LeRobot's own kinematics feeds them to the same URDF through ``np.deg2rad``); the gripper takes 0..100 (0 closed,
100 open), robot-stack's opening 0..1. A follower configured with ``use_degrees=False`` (-100..100 ranges) is
refused: those numbers are not angles without the calibration file. Velocities are not reported by the bus read;
the adapter differentiates successive positions.

Not covered without an arm: the servo behaviour and calibration (``pytest -m hardware`` with
``ROBOT_STACK_SO101_PORT`` runs the live checks).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from robot_stack.arms.base import VendorArm, import_vendor
from robot_stack.clock import Clock
from robot_stack.errors import ConfigError, RobotError
from robot_stack.robots import so101
from robot_stack.robots.embodiment import Embodiment
from robot_stack.types import RobotState

log = logging.getLogger("robot_stack.arms.so_follower")

__all__ = ["GRIPPER_MOTOR", "SOFollowerArm", "action_from_q", "connect", "q_from_observation"]

#: LeRobot's name of the gripper motor.
GRIPPER_MOTOR = "gripper"
_INSTALL = "pip install lerobot==0.4.4 (its own environment: it pins torch < 2.11)"


def q_from_observation(observation: dict[str, Any], joints: tuple[str, ...]) -> tuple[np.ndarray, float]:
    """(q (n,) rad, gripper opening in [0, 1]) from a follower observation ``{"<motor>.pos": degrees | 0..100}``."""
    try:
        degrees = np.array([float(observation[f"{j}.pos"]) for j in joints])
        grip = float(observation[f"{GRIPPER_MOTOR}.pos"])
    except KeyError as exc:
        raise RobotError(
            f"SO follower observation has no {exc.args[0]!r}; got {sorted(observation)} (is it an SO-100/101?)"
        ) from None
    if not (np.all(np.isfinite(degrees)) and np.isfinite(grip)):
        raise RobotError(f"SO follower reported non-finite positions: {observation}")
    return np.deg2rad(degrees), float(np.clip(grip / 100.0, 0.0, 1.0))


def action_from_q(q: np.ndarray, gripper: float | None, joints: tuple[str, ...]) -> dict[str, float]:
    """A follower action ``{"<motor>.pos": degrees, "gripper.pos": 0..100}`` for joints ``q`` (rad) and an opening
    in [0, 1] (None: the gripper is not commanded)."""
    action = {f"{j}.pos": float(np.rad2deg(v)) for j, v in zip(joints, q, strict=True)}
    if gripper is not None:
        action[f"{GRIPPER_MOTOR}.pos"] = float(100.0 * gripper)
    return action


class SOFollowerArm(VendorArm):
    """An SO-100/101 follower (see the module docstring).

    Args:
        follower: a connected LeRobot ``SOFollower`` (``config.use_degrees`` must be True).
        embodiment: the arm's description (default the SO-101).
        clock: state timestamps and the velocity differences.
    """

    def __init__(self, follower: Any, embodiment: Embodiment = so101.EMBODIMENT, clock: Clock | None = None) -> None:
        super().__init__(embodiment, clock)
        config = getattr(follower, "config", None)
        if config is not None and not getattr(config, "use_degrees", True):
            raise ConfigError(
                "SO follower: config.use_degrees is False (motors in -100..100 of their calibrated range); robot-stack "
                "needs angles: create the follower with use_degrees=True"
            )
        if not follower.is_connected:
            raise RobotError(
                "SO follower: not connected; call follower.connect() (or use robot_stack.arms.so_follower.connect)"
            )
        self.follower = follower
        self._lock = threading.Lock()
        self._last: tuple[int, np.ndarray] | None = None
        self._dq = np.zeros(embodiment.dof)
        self.clipped = 0

    def read_state(self) -> RobotState:
        """q (rad) and the opening from the bus; dq by differences of successive reads; the TCP by forward
        kinematics of the description (the servos report no pose)."""
        with self._lock:
            try:
                observation = self.follower.get_observation()
            except ConnectionError as exc:  # LeRobot's DeviceNotConnectedError, a lost serial port
                raise RobotError(
                    f"SO follower: {exc}; check the USB cable and the power supply, then reconnect"
                ) from exc
            t_ns = self.clock.now_ns()
            q, opening = q_from_observation(observation, self.joint_names)
            if self._last is not None and t_ns > self._last[0]:
                self._dq = (q - self._last[1]) / ((t_ns - self._last[0]) * 1e-9)
            self._last = (t_ns, q)
            dq = self._dq.copy()
        return RobotState(t_ns, q, dq, self.ik.fk(q), opening)

    def command(self, q: np.ndarray, gripper: float | None = None) -> None:
        """Goal positions for the five arm servos (and the gripper) through ``send_action``."""
        target = self.validate(q, gripper)
        action = action_from_q(target, gripper, self.joint_names)
        with self._lock:
            try:
                sent = self.follower.send_action(action)
            except ConnectionError as exc:
                raise RobotError(
                    f"SO follower: {exc}; check the USB cable and the power supply, then reconnect"
                ) from exc
        clipped = {k: (action[k], v) for k, v in dict(sent or {}).items() if k in action and abs(v - action[k]) > 1e-4}
        if clipped:
            self.clipped += 1
            log.warning("SO follower clipped the command by its max_relative_target: %s (goal, sent) deg", clipped)
        self.commands += 1

    def close(self) -> None:
        """Disconnect (LeRobot disables the torque unless ``disable_torque_on_disconnect`` is False)."""
        with self._lock:
            if self.follower.is_connected:
                self.follower.disconnect()


def connect(
    port: str,
    id: str | None = None,  # noqa: A002 - LeRobot's name of the arm (its calibration file)
    calibration_dir: str | None = None,
    max_relative_target: float | None = None,
    model: str = "so101",
    calibrate: bool = False,
) -> SOFollowerArm:
    """Create LeRobot's follower for ``port`` (degrees mode), connect it and wrap it (``robot.factory``).

    Args:
        port: the serial port of the arm's controller board (``lerobot-find-port``).
        id: the arm's LeRobot id (selects its calibration file ``<calibration_dir>/<id>.json``).
        calibration_dir: where LeRobot keeps the calibration (default LeRobot's).
        max_relative_target: LeRobot's own cap on one command's change, degrees (None: off; the safety filter
            already bounds velocity).
        calibrate: let LeRobot run its interactive calibration when the file is missing or differs.

    Raises:
        RobotError: lerobot is not installed, or the port cannot be opened (the message says what to check).
    """
    from robot_stack.robots.registry import get_embodiment

    embodiment = get_embodiment(model)
    if embodiment.name not in ("so101",):
        raise ConfigError(f"so_follower.connect: model {model!r} is not an SO follower arm")
    module = import_vendor("lerobot.robots.so_follower", "lerobot", _INSTALL)
    cap = None if max_relative_target is None else float(max_relative_target)  # LeRobot takes a float or a dict
    kwargs: dict[str, Any] = {"port": port, "id": id, "use_degrees": True, "max_relative_target": cap}
    if calibration_dir is not None:
        from pathlib import Path

        kwargs["calibration_dir"] = Path(calibration_dir)
    follower = module.SO101Follower(module.SO101FollowerConfig(**kwargs))
    try:
        follower.connect(calibrate=calibrate)
    except ConnectionError as exc:
        raise RobotError(
            f"cannot open the SO follower on {port} ({exc}); find the port with `lerobot-find-port`, check the USB "
            "cable and the 5-12 V supply"
        ) from exc
    return SOFollowerArm(follower, embodiment)
