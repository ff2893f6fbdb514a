"""A fake of LeRobot 0.4.4's SO follower API, read from its source, for testing the adapter without lerobot.

LeRobot pins its own torch and is not installed beside robot-stack; the adapter (``robot_stack.arms.so_follower``)
imports ``lerobot.robots.so_follower`` lazily. :func:`install` puts these modules into ``sys.modules`` under LeRobot's
names. What is reproduced, from ``src/lerobot`` at tag v0.4.4:

* ``robots/so_follower/config_so_follower.py``: ``SOFollowerConfig`` (``port``, ``disable_torque_on_disconnect``,
  ``max_relative_target``, ``cameras``, ``use_degrees``) + ``RobotConfig`` (``id``, ``calibration_dir``), the aliases
  ``SO100FollowerConfig`` / ``SO101FollowerConfig``;
* ``robots/so_follower/so_follower.py``: ``SOFollower`` with motors shoulder_pan, shoulder_lift, elbow_flex,
  wrist_flex, wrist_roll (degrees with ``use_degrees``, else -100..100) and gripper (0..100); ``connect(calibrate)``
  raising ``DeviceAlreadyConnectedError`` when connected and the bus' ``ConnectionError`` ("Could not connect on port
  ...") when the port cannot be opened; ``get_observation`` -> ``{"<motor>.pos": value}``; ``send_action`` taking the
  ``.pos`` keys, capping each goal to ``max_relative_target`` from the present position
  (``robots/utils.py:ensure_safe_goal_position``), writing ``Goal_Position`` and returning the action sent;
  ``disconnect``; ``DeviceNotConnectedError`` from every call when not connected (``utils/decorators.py``);
* ``utils/errors.py``: both errors subclass ``ConnectionError``.

The servos are ideal: a goal position becomes the present position at once.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MOTORS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


class DeviceNotConnectedError(ConnectionError):
    def __init__(self, message: str = "This device is not connected. Try calling `connect()` first.") -> None:
        super().__init__(message)


class DeviceAlreadyConnectedError(ConnectionError):
    def __init__(self, message: str = "This device is already connected. Try not calling `connect()` twice.") -> None:
        super().__init__(message)


@dataclass(kw_only=True)
class SOFollowerRobotConfig:
    port: str
    disable_torque_on_disconnect: bool = True
    max_relative_target: float | dict[str, float] | None = None
    cameras: dict[str, Any] = field(default_factory=dict)
    use_degrees: bool = True
    id: str | None = None
    calibration_dir: Path | None = None


def ensure_safe_goal_position(
    goal_present_pos: dict[str, tuple[float, float]], max_relative_target: float | dict[str, float]
) -> dict[str, float]:
    if isinstance(max_relative_target, float):
        cap = dict.fromkeys(goal_present_pos, max_relative_target)
    elif isinstance(max_relative_target, dict):
        if set(max_relative_target) != set(goal_present_pos):
            raise ValueError("max_relative_target keys must match those of goal_present_pos.")
        cap = max_relative_target
    else:
        raise TypeError(max_relative_target)
    return {k: present + max(min(goal - present, cap[k]), -cap[k]) for k, (goal, present) in goal_present_pos.items()}


class SOFollower:
    name = "so_follower"

    def __init__(self, config: SOFollowerRobotConfig) -> None:
        self.config = config
        self.id = config.id
        self._connected = False
        self.torque = False
        self.present = dict.fromkeys(MOTORS, 0.0)
        self.present["gripper"] = 50.0
        self.writes: list[dict[str, float]] = []

    def __str__(self) -> str:
        return f"{self.id} {self.__class__.__name__}"

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        if self._connected:
            raise DeviceAlreadyConnectedError(f"{self.__class__.__name__} is already connected.")
        if not os.path.exists(self.config.port):
            raise ConnectionError(
                f"\nCould not connect on port '{self.config.port}'. Make sure you are using the correct port."
                "\nTry running `lerobot-find-port`\n"
            )
        self._connected = True
        self.torque = True

    def _require(self) -> None:
        if not self._connected:
            raise DeviceNotConnectedError(f"{self.__class__.__name__} is not connected. Run `.connect()` first.")

    def get_observation(self) -> dict[str, float]:
        self._require()
        return {f"{m}.pos": v for m, v in self.present.items()}

    def send_action(self, action: dict[str, float]) -> dict[str, float]:
        self._require()
        goal = {k.removesuffix(".pos"): v for k, v in action.items() if k.endswith(".pos")}
        if self.config.max_relative_target is not None:
            goal = ensure_safe_goal_position(
                {k: (g, self.present[k]) for k, g in goal.items()}, self.config.max_relative_target
            )
        self.writes.append(dict(goal))
        self.present.update(goal)
        return {f"{m}.pos": v for m, v in goal.items()}

    def disconnect(self) -> None:
        self._require()
        self.torque = not self.config.disable_torque_on_disconnect
        self._connected = False


SO100Follower = SOFollower
SO101Follower = SOFollower
SO100FollowerConfig = SOFollowerRobotConfig
SO101FollowerConfig = SOFollowerRobotConfig


def install(monkeypatch: Any) -> types.ModuleType:
    """Make ``import lerobot.robots.so_follower`` (and ``lerobot.utils.errors``) resolve to this fake."""
    modules = {name: types.ModuleType(name) for name in ("lerobot", "lerobot.robots", "lerobot.utils")}
    follower = types.ModuleType("lerobot.robots.so_follower")
    for name in (
        "SOFollower",
        "SO100Follower",
        "SO101Follower",
        "SOFollowerRobotConfig",
        "SO100FollowerConfig",
        "SO101FollowerConfig",
    ):
        setattr(follower, name, globals()[name])
    errors = types.ModuleType("lerobot.utils.errors")
    errors.DeviceNotConnectedError = DeviceNotConnectedError  # type: ignore[attr-defined]
    errors.DeviceAlreadyConnectedError = DeviceAlreadyConnectedError  # type: ignore[attr-defined]
    modules.update({"lerobot.robots.so_follower": follower, "lerobot.utils.errors": errors})
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return follower
