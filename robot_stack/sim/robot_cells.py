"""The simulated cells of the described arms: which arm stands in which calibration scene, and where its cameras are.

A *cell* is what ``calibration/<scene>/`` calibrates: one arm on its table with its camera placement. Each arm has
its own cell (its own reach, so its own workspace and camera view):

==============  =======  ==========================================================================================
scene           arm      cameras
==============  =======  ==========================================================================================
sim_tabletop    panda    ``front`` (1.15 m in front, 47 deg down), ``side`` (0.9 m to the right)
sim_ur5         ur5      ``front`` (1.2 m, 14 deg to the left, 45 deg down), ``side`` (0.95 m to the right)
sim_so101       so101    ``front`` (0.48 m, 20 deg to the left, 40 deg down), ``side`` (0.5 m to the right)
==============  =======  ==========================================================================================

Each camera's ground-truth calibration file is written by ``python -m robot_stack.sim.calibration --scene <scene>
--camera <camera>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from robot_stack.errors import SimError
from robot_stack.robots.registry import ROBOT_MODELS
from robot_stack.sim.scene import FRONT_CAMERA, CameraSpec, sim_side_camera

log = logging.getLogger("robot_stack.sim")

__all__ = ["ROBOT_CELLS", "RobotCell", "cell_for", "default_scene"]


@dataclass(frozen=True)
class RobotCell:
    """One simulated cell: its calibration scene name, its arm and its fixed cameras (the first is the default)."""

    scene: str
    robot: str
    cameras: tuple[CameraSpec, ...]


#: Every simulated cell, by calibration scene name.
ROBOT_CELLS: dict[str, RobotCell] = {
    cell.scene: cell
    for cell in (
        RobotCell("sim_tabletop", "panda", (FRONT_CAMERA, sim_side_camera())),
        RobotCell(
            "sim_ur5",
            "ur5",
            (
                CameraSpec("front", pos=(1.18, 0.30, 1.02), target=(0.48, 0.0, 0.15), fovy_deg=55.0),
                CameraSpec("side", pos=(0.50, -0.95, 0.75), target=(0.48, 0.0, 0.25), fovy_deg=50.0),
            ),
        ),
        RobotCell(
            "sim_so101",
            "so101",
            (
                CameraSpec("front", pos=(0.62, 0.16, 0.40), target=(0.21, 0.0, 0.06), fovy_deg=55.0),
                CameraSpec("side", pos=(0.24, -0.50, 0.38), target=(0.22, 0.0, 0.08), fovy_deg=55.0),
            ),
        ),
    )
}


def default_scene(robot: str) -> str:
    """The calibration scene of ``robot``'s own simulated cell."""
    for cell in ROBOT_CELLS.values():
        if cell.robot == robot:
            return cell.scene
    raise SimError(f"no simulated cell for robot {robot!r}; arms with a cell: {', '.join(ROBOT_MODELS)}")


def cell_for(scene: str | None, robot: str | None = None) -> RobotCell:
    """The cell of calibration scene ``scene``; for a scene robot-stack does not simulate (a scene made for a test,
    a copy of a shipped one) the default cell of ``robot`` (the Panda's when None), with a warning.

    Raises:
        SimError: ``scene`` is a simulated cell of another arm than ``robot``.
    """
    if scene in ROBOT_CELLS:
        cell = ROBOT_CELLS[scene]
        if robot is not None and cell.robot != robot:
            raise SimError(
                f"calibration scene {scene!r} is the {cell.robot} cell, but the robot is {robot!r}; use scene "
                f"{default_scene(robot)!r} (or pass --robot {cell.robot})"
            )
        return cell
    fallback = ROBOT_CELLS[default_scene(robot or "panda")]
    if scene is not None:
        log.warning("calibration scene %r is not a simulated cell; rendering the cameras of %s", scene, fallback.scene)
    return fallback
