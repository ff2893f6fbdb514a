"""Teleoperation devices behind one interface (:class:`TeleopDevice`): keyboard EE jog, SpaceMouse, leader arm and
the scripted expert of the simulated cell. A device returns :class:`~robot_stack.types.ActionChunk` s like a policy,
so its commands take the same decoder (IK), executor and safety filter. Recording sessions: :mod:`.sim`.
"""

from robot_stack.teleop.base import TeleopDecoder, TeleopDevice, ee_jog_chunk
from robot_stack.teleop.expert import ExpertTeleop
from robot_stack.teleop.keyboard import JOG_KEYS, KeyboardJog
from robot_stack.teleop.keys import EPISODE_KEYS, KeyEvent, KeySource, QueueKeySource, StdinKeySource, episode_event
from robot_stack.teleop.leader import LeaderArm
from robot_stack.teleop.spacemouse import SpaceMouse, spacemouse_velocity

__all__ = [
    "EPISODE_KEYS",
    "JOG_KEYS",
    "ExpertTeleop",
    "KeyEvent",
    "KeySource",
    "KeyboardJog",
    "LeaderArm",
    "QueueKeySource",
    "SpaceMouse",
    "StdinKeySource",
    "TeleopDecoder",
    "TeleopDevice",
    "ee_jog_chunk",
    "episode_event",
    "spacemouse_velocity",
]
