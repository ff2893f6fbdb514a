"""The scripted expert as a teleop device (simulation): solves reach-and-touch from the true cube pose."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from robot_stack.sim.expert import ExpertConfig, ScriptedExpert
from robot_stack.teleop.base import TeleopDevice
from robot_stack.types import ActionChunk, Observation

__all__ = ["ExpertTeleop"]


class ExpertTeleop(TeleopDevice):
    """:class:`~robot_stack.sim.expert.ScriptedExpert` chunks (``ee_delta_xyz``) from privileged simulator state.

    Args:
        cube_top: returns the cube's top-centre (3,) metres in the base frame (e.g. ``task.cube_top_center``).
        config: expert parameters (horizon 8, dt 0.1 s, 0.15 m/s by default).
    """

    name = "expert"

    def __init__(self, cube_top: Callable[[], np.ndarray], config: ExpertConfig | None = None) -> None:
        self.expert = ScriptedExpert(config, model_id="expert_teleop")
        self.cube_top = cube_top
        self.period_s = self.expert.config.dt_s

    def command(self, obs: Observation) -> ActionChunk:
        return self.expert.act(obs.state.ee_pose.translation, self.cube_top(), obs.t_obs_ns)
