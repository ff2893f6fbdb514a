"""Keyboard end-effector jog: each key press moves the TCP target a fixed step along a base-frame axis."""

from __future__ import annotations

import numpy as np

from robot_stack.errors import ConfigError
from robot_stack.teleop.base import EeTargetJog, TeleopDevice, ee_jog_chunk
from robot_stack.teleop.keys import EPISODE_KEYS, KeySource
from robot_stack.types import ActionChunk, Observation

__all__ = ["JOG_KEYS", "KeyboardJog"]

#: Jog key -> unit direction in the robot base frame (x forward, y left, z up). ``g`` toggles the gripper.
JOG_KEYS: dict[str, tuple[float, float, float]] = {
    "i": (1.0, 0.0, 0.0),
    "k": (-1.0, 0.0, 0.0),
    "j": (0.0, 1.0, 0.0),
    "l": (0.0, -1.0, 0.0),
    "u": (0.0, 0.0, 1.0),
    "o": (0.0, 0.0, -1.0),
}


class KeyboardJog(TeleopDevice):
    """TCP position jog from a :class:`KeySource` (``i/k`` ±x, ``j/l`` ±y, ``u/o`` ±z, ``g`` gripper): each press
    moves the TCP target by ``step_m``; chunks aim at the target (:class:`~robot_stack.teleop.base.EeTargetJog`).

    Episode keys (:data:`~robot_stack.teleop.keys.EPISODE_KEYS`) read by :meth:`command` are handed to
    :attr:`episode_keys` for the recording session instead of being lost.

    Args:
        keys: where key characters come from; None = only what :meth:`press` hands over (a recording session
            that reads one terminal for episode keys and jog keys feeds the device this way).
        step_m: TCP displacement per key press, metres.
        period_s: chunk dt: a press is executed over this many seconds.
    """

    name = "keyboard"

    def __init__(self, keys: KeySource | None, step_m: float = 0.01, period_s: float = 0.1) -> None:
        if not (step_m > 0 and period_s > 0):
            raise ConfigError(f"KeyboardJog: step_m and period_s must be > 0, got {step_m}, {period_s}")
        self.keys = keys
        self.step_m = float(step_m)
        self.period_s = float(period_s)
        self.gripper = 1.0
        self.episode_keys: list[str] = []
        self._jog = EeTargetJog()
        self._pressed: list[str] = []

    def press(self, keys: str | list[str]) -> None:
        """Hand over key characters read elsewhere (used at the next :meth:`command`)."""
        self._pressed.extend(keys)

    def reset(self) -> None:
        self.gripper = 1.0
        self._jog.reset()

    def command(self, obs: Observation) -> ActionChunk | None:
        """Chunk towards the jogged TCP target; None before the first key press (nothing to do yet)."""
        pressed, self._pressed = self._pressed, []
        if self.keys is not None:
            pressed += self.keys.poll()
        if not pressed and self._jog.target is None:
            return None
        d = np.zeros(3)
        for key in pressed:
            if key in JOG_KEYS:
                d += self.step_m * np.asarray(JOG_KEYS[key])
            elif key == "g":
                self.gripper = 0.0 if self.gripper > 0.5 else 1.0
            elif key in EPISODE_KEYS:
                self.episode_keys.append(key)
        return ee_jog_chunk(obs, self._jog.step(obs, d), self.gripper, self.period_s, self.name)
