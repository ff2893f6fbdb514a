"""Named simulated cells: where the ``front`` camera of each calibration scene stands.

A *cell* is what ``calibration/<scene>/`` calibrates: one camera placement relative to one robot base. The demo's
cell ``sim_tabletop`` has the default :data:`~robot_stack.sim.scene.FRONT_CAMERA` (and the ``side`` camera). The
language-conditioned task suite (:mod:`robot_stack.sim.tabletop`) trains on the camera placements of **scene set
A** (``vla_a0`` .. ``vla_a7``) and is tested across scenes on the unseen placements of **set B** (``vla_b0`` ..
``vla_b2``): cameras 0.94-1.34 m from the workspace, azimuth within ±30° of straight ahead, elevation 38-58°,
aimed within ±4 cm of the workspace centre, vertical field of view 51-60°. The placements were drawn once from
those ranges (seeds 14 for A and 1414 for B) and are written out here so that they never change. Each cell's
ground-truth calibration file is written by ``python -m robot_stack.sim.calibration --scene <cell>``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from robot_stack.errors import SimError
from robot_stack.sim.scene import FRONT_CAMERA, CameraSpec, ObjectSpec, SceneConfig, sim_side_camera

log = logging.getLogger("robot_stack.sim")

__all__ = ["CELLS", "SCENE_SET_A", "SCENE_SET_B", "cell_cameras", "cell_scene_config"]

#: Scene set A (training placements of the front camera): (pos, target, fovy_deg), base frame, metres.
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
#: Every simulated cell: name -> its cameras.
CELLS: dict[str, tuple[CameraSpec, ...]] = {
    "sim_tabletop": (FRONT_CAMERA, sim_side_camera()),
    **{name: (CameraSpec("front", pos, target, fovy),) for name, (pos, target, fovy) in {**_SET_A, **_SET_B}.items()},
}


def cell_cameras(cell: str) -> tuple[CameraSpec, ...]:
    """The cameras of ``cell``. Raises SimError naming the known cells."""
    try:
        return CELLS[cell]
    except KeyError:
        raise SimError(f"no simulated cell {cell!r}; known: {', '.join(CELLS)}") from None


def cell_scene_config(cell: str, camera_ids: Sequence[str], objects: Sequence[ObjectSpec] = ()) -> SceneConfig:
    """The MuJoCo scene of ``cell`` with the requested cameras (the first one is the default camera) and extra
    ``objects`` on the table. A cell robot-stack does not know (a calibration scene made for a test or copied from
    ``sim_tabletop``) gets the cameras of ``sim_tabletop``, with a warning.

    Raises:
        SimError: a camera the cell does not have.
    """
    if cell not in CELLS:
        log.warning("calibration scene %r is not a simulated cell; rendering the cameras of sim_tabletop", cell)
        cell = "sim_tabletop"
    cameras = {c.name: c for c in cell_cameras(cell)}
    unknown = [c for c in camera_ids if c not in cameras]
    if unknown:
        raise SimError(f"the simulated cell {cell!r} has no camera(s) {unknown}; available: {', '.join(cameras)}")
    chosen = tuple(cameras[c] for c in camera_ids) or (next(iter(cameras.values())),)
    return SceneConfig(cameras=chosen, objects=tuple(objects))
