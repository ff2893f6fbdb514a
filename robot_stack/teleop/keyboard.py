"""Keyboard end-effector jog: the TCP target moves along a base-frame axis while a key is held (key-down to key-up,
from :class:`~robot_stack.teleop.terminal.TerminalKeys`), or a fixed step per key press (any other key source)."""

from __future__ import annotations

from collections.abc import Callable

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
    """TCP position jog (``i/k`` ±x, ``j/l`` ±y, ``u/o`` ±z, ``g`` gripper); chunks aim at the jogged TCP target
    (:class:`~robot_stack.teleop.base.EeTargetJog`). With ``held`` (the keys down now, e.g.
    :meth:`TerminalKeys.held <robot_stack.teleop.terminal.TerminalKeys.held>`) the target moves at ``speed_m_s``
    while a jog key is down and stops at its key-up; without it, each press moves the target by ``step_m``.

    Episode keys (:data:`~robot_stack.teleop.keys.EPISODE_KEYS`) read by :meth:`command` are handed to
    :attr:`episode_keys` for the recording session instead of being lost.

    Args:
        keys: where key characters come from; None = only what :meth:`press` hands over (a recording session
            that reads one terminal for episode keys and jog keys feeds the device this way).
        step_m: TCP displacement per key press, metres (press mode).
        period_s: chunk dt: a press is executed over this many seconds.
        held: the jog keys held down now (key-down/key-up mode).
        speed_m_s: TCP speed while a key is held, m/s (key-down/key-up mode).
    """

    name = "keyboard"

    def __init__(
        self,
        keys: KeySource | None,
        step_m: float = 0.01,
        period_s: float = 0.1,
        *,
        held: Callable[[], set[str]] | None = None,
        speed_m_s: float = 0.05,
    ) -> None:
        if not (step_m > 0 and period_s > 0 and speed_m_s > 0):
            raise ConfigError(
                f"KeyboardJog: step_m, period_s and speed_m_s must be > 0, got {step_m}, {period_s}, {speed_m_s}"
            )
        self.keys = keys
        self.held = held
        self.speed_m_s = float(speed_m_s)
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
        down = self.held() if self.held is not None else set()
        if not pressed and not down and self._jog.target is None:
            return None
        d = np.zeros(3)
        for key in down & set(JOG_KEYS):  # key-down/key-up: move while held
            d += self.speed_m_s * self.period_s * np.asarray(JOG_KEYS[key])
        for key in pressed:
            if key in JOG_KEYS:
                if self.held is None:
                    d += self.step_m * np.asarray(JOG_KEYS[key])
            elif key == "g":
                self.gripper = 0.0 if self.gripper > 0.5 else 1.0
            elif key in EPISODE_KEYS:
                self.episode_keys.append(key)
        return ee_jog_chunk(obs, self._jog.step(obs, d), self.gripper, self.period_s, self.name)
