"""The scripted experts as teleop devices (simulation): reach-and-touch from the true cube pose, and every instruction
of the tabletop suite from the true object poses."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from robot_stack.sim.expert import ExpertConfig, ScriptedExpert, tabletop_expert_actions
from robot_stack.teleop.base import TeleopDevice
from robot_stack.types import ActionChunk, Observation

__all__ = ["ExpertTeleop", "TabletopExpertTeleop"]


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


class TabletopExpertTeleop(TeleopDevice):
    """The tabletop suite's expert (:func:`~robot_stack.sim.expert.tabletop_expert_actions`) for the instruction
    of ``task`` (a :class:`~robot_stack.sim.tabletop.TabletopTask`), from privileged simulator state.

    Args:
        goal: returns ``(kind, point)`` for the current state (``task.expert_goal``).
        config: expert parameters.
    """

    name = "expert"

    def __init__(self, goal: Callable[[], tuple[str, np.ndarray]], config: ExpertConfig | None = None) -> None:
        self.config = config or ExpertConfig()
        self.goal = goal
        self.period_s = self.config.dt_s

    def command(self, obs: Observation) -> ActionChunk:
        kind, point = self.goal()
        actions = tabletop_expert_actions(obs.state.ee_pose.translation, kind, point, self.config)
        return ActionChunk(
            obs.t_obs_ns, self.config.dt_s, actions, "ee_delta_xyz", np.ones(self.config.horizon), "expert_teleop"
        )
