"""3Dconnexion SpaceMouse: TCP velocity jog through ``pyspacemouse`` (HID). Needs the device (tests: hardware)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from robot_stack.errors import ConfigError, RobotError
from robot_stack.teleop.base import EeTargetJog, TeleopDevice, ee_jog_chunk
from robot_stack.types import ActionChunk, Observation

log = logging.getLogger("robot_stack.teleop.spacemouse")

__all__ = ["SpaceMouse", "spacemouse_velocity"]


def spacemouse_velocity(axes: np.ndarray, max_speed_mps: float, deadband: float) -> np.ndarray:
    """(3,) m/s TCP velocity in the base frame from the device's (x, y, z) deflections in [-1, 1].

    The device's x (right) maps to base -y, y (forward) to base +x, z (up) to base +z (operator facing the robot
    from behind); deflections inside ``deadband`` are zero, the rest scale linearly to ``max_speed_mps``.
    """
    a = np.clip(np.asarray(axes, dtype=np.float64).reshape(3), -1.0, 1.0)
    a = np.where(np.abs(a) < deadband, 0.0, (np.abs(a) - deadband) / (1.0 - deadband) * np.sign(a))
    return max_speed_mps * np.array([a[1], -a[0], a[2]])


class SpaceMouse(TeleopDevice):
    """SpaceMouse TCP jog (translation; the gripper keeps pointing down). Button 0 toggles the gripper.

    Args:
        max_speed_mps: TCP speed at full deflection, m/s.
        deadband: deflection below which the axis reads zero.
        period_s: command period and chunk dt, seconds.
    """

    name = "spacemouse"

    def __init__(self, max_speed_mps: float = 0.1, deadband: float = 0.08, period_s: float = 0.05) -> None:
        if not (max_speed_mps > 0 and 0 <= deadband < 1 and period_s > 0):
            raise ConfigError("SpaceMouse: need max_speed_mps > 0, 0 <= deadband < 1, period_s > 0")
        self.max_speed_mps = float(max_speed_mps)
        self.deadband = float(deadband)
        self.period_s = float(period_s)
        self.gripper = 1.0
        self._device: Any = None
        self._button_was = False
        self._lock = threading.Lock()
        self._jog = EeTargetJog()

    def reset(self) -> None:
        self.gripper = 1.0
        self._jog.reset()

    def start(self) -> None:
        """Open the first SpaceMouse found.

        Raises:
            ConfigError: ``pyspacemouse`` is not installed.
            RobotError: no device could be opened (not plugged in, or no permission on /dev/hidraw*).
        """
        with self._lock:
            if self._device is not None:
                return
            try:
                import pyspacemouse
            except ImportError as exc:
                raise ConfigError("SpaceMouse needs `pip install pyspacemouse` (and libhidapi)") from exc
            device = pyspacemouse.open()
            if not device:
                raise RobotError(
                    "no SpaceMouse could be opened: plug it in and allow access to /dev/hidraw* (udev rule), then retry"
                )
            self._device = device

    def stop(self) -> None:
        with self._lock:
            if self._device is not None:
                try:
                    self._device.close()
                except Exception as exc:
                    log.debug("closing the SpaceMouse: %s", exc)
            self._device = None

    def command(self, obs: Observation) -> ActionChunk:
        with self._lock:
            if self._device is None:
                raise RobotError("SpaceMouse is not started; call start()")
            state = self._device.read()
        v = spacemouse_velocity(np.array([state.x, state.y, state.z]), self.max_speed_mps, self.deadband)
        pressed = bool(state.buttons and state.buttons[0])
        if pressed and not self._button_was:
            self.gripper = 0.0 if self.gripper > 0.5 else 1.0
        self._button_was = pressed
        return ee_jog_chunk(obs, self._jog.step(obs, v * self.period_s), self.gripper, self.period_s, self.name)
