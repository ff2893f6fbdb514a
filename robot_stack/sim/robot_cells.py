"""The simulated cells of the described arms: which arm stands in which calibration scene, and where its cameras are.

A *cell* is what ``calibration/<scene>/`` calibrates: one arm on its table with its camera placement. Each arm has
its own cell (its own reach, so its own workspace and camera view):

==============  =======  ==========================================================================================
scene           arm      cameras
==============  =======  ==========================================================================================
sim_tabletop    panda    ``front`` (1.15 m in front, 47 deg down), ``side`` (0.9 m to the right)
sim_ur5         ur5      ``front`` (1.2 m, 14 deg to the left, 45 deg down), ``side`` (0.95 m to the right)
sim_so101       so101    ``front`` (0.48 m, 20 deg to the left, 40 deg down), ``side`` (0.5 m to the right)
vla_a0..vla_a7  panda    ``front`` only: scene set A of the language-conditioned suite (training placements)
vla_b0..vla_b2  panda    ``front`` only: scene set B (unseen placements for the cross-scene test)
==============  =======  ==========================================================================================

The suite's placements (:mod:`robot_stack.sim.tabletop`): cameras 0.94-1.34 m from the workspace, azimuth within
±30° of straight ahead, elevation 38-58°, aimed within ±4 cm of the workspace centre, vertical field of view 51-60°;
drawn once from those ranges (seeds 14 for A and 1414 for B) and written out here so that they never change.

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

__all__ = ["ROBOT_CELLS", "SCENE_SET_A", "SCENE_SET_B", "RobotCell", "cell_for", "default_scene"]


@dataclass(frozen=True)
class RobotCell:
    """One simulated cell: its calibration scene name, its arm and its fixed cameras (the first is the default)."""

    scene: str
    robot: str
    cameras: tuple[CameraSpec, ...]


#: Scene set A of the tabletop suite (training placements of the front camera): (pos, target, fovy_deg), base frame,
#: metres.
_SET_A = {
    "vla_a0": ((1.225, 0.281, 0.954), (0.479, 0.011, 0.155), 57.6),
    "vla_a1": ((1.191, 0.131, 0.969), (0.470, -0.035, 0.165), 57.4),
    "vla_a2": ((1.130, -0.033, 0.880), (0.462, 0.038, 0.130), 54.6),
    "vla_a3": ((1.098, 0.238, 0.912), (0.463, -0.038, 0.115), 58.7),
    "vla_a4": ((1.335, -0.285, 0.913), (0.470, 0.038, 0.176), 59.2),
    "vla_a5": ((1.063, -0.078, 0.912), (0.476, 0.019, 0.119), 51.8),
    "vla_a6": ((1.044, -0.209, 1.076), (0.432, 0.012, 0.169), 56.9),
    "vla_a7": ((0.942, 0.280, 0.973), (0.414, -0.022, 0.107), 57.8),
}
#: Scene set B (unseen placements for the cross-scene test).
_SET_B = {
    "vla_b0": ((1.299, 0.274, 0.887), (0.487, 0.015, 0.113), 59.7),
    "vla_b1": ((1.230, -0.316, 0.968), (0.466, -0.005, 0.195), 54.7),
    "vla_b2": ((1.040, -0.078, 0.873), (0.432, 0.002, 0.128), 52.7),
}
SCENE_SET_A: tuple[str, ...] = tuple(_SET_A)
SCENE_SET_B: tuple[str, ...] = tuple(_SET_B)

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
        *(
            RobotCell(name, "panda", (CameraSpec("front", pos, target, fovy),))
            for name, (pos, target, fovy) in {**_SET_A, **_SET_B}.items()
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
