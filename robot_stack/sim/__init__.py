"""MuJoCo simulation of the demo cell: a Panda on a table, a red cube, RGB-D cameras, the reach-and-touch task.

The robot base frame is the MuJoCo world frame (``panda_link0`` at the origin, table top at z = 0). The world is
stepped lazily by whoever reads or commands it (:meth:`SimWorld.sync`), so it runs in clock time without a
physics thread and deterministically under ``FakeClock``.
"""

from __future__ import annotations

from robot_stack.sim.camera import DEPTH_SCALE, SimCamera, select_gl_backend
from robot_stack.sim.expert import ExpertConfig, ScriptedExpert, expert_actions, expert_path
from robot_stack.sim.robot import SimRobot
from robot_stack.sim.scene import FRONT_CAMERA, T_WORLD_BASE, CameraSpec, SceneConfig, build_model, build_spec
from robot_stack.sim.task import ReachTouchTask
from robot_stack.sim.world import SimWorld, WorldStats

__all__ = [
    "DEPTH_SCALE",
    "FRONT_CAMERA",
    "T_WORLD_BASE",
    "CameraSpec",
    "ExpertConfig",
    "ReachTouchTask",
    "SceneConfig",
    "ScriptedExpert",
    "SimCamera",
    "SimRobot",
    "SimWorld",
    "WorldStats",
    "build_model",
    "build_spec",
    "expert_actions",
    "expert_path",
    "select_gl_backend",
]
