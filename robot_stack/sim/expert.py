"""Scripted expert for the reach-and-touch task (generates training labels; never runs in the demo).

The expert's chunk is a *pure function* of the observed TCP position and the cube's top-centre, both in the robot
base frame (metres), so the same function labels recorded data offline: :func:`expert_actions`.

Path: from the TCP, (1) rise vertically if below the hover height, (2) move to the hover point ``hover_m`` above
the cube's top centre, (3) go straight down to the top centre. When the TCP is already inside a narrow cone above
the target (horizontal offset ≤ ``max(capture_m, cone_slope · height above target)``, height ≥ ``-capture_m``) it
skips (1)-(2) and heads straight for the top, so small tracking errors during the descent do not send it back up.

Timing: the path is followed at ``max_speed_mps`` and decelerates at ``decel_mps2`` before the final target (no
stop at the hover point; the corner is short at these speeds). Step ``k`` is meant for ``t_obs + k * dt``
(:class:`~robot_stack.types.ActionChunk`), so ``actions[0]`` is the zero displacement of "now" and every later
step moves at most ``max_speed_mps * dt`` further.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_stack.errors import ShapeError
from robot_stack.types import ActionChunk

__all__ = ["ExpertConfig", "ScriptedExpert", "expert_actions", "expert_path"]

ACTION_SPACE = "ee_delta_xyz"


@dataclass(frozen=True)
class ExpertConfig:
    """Parameters of the scripted expert.

    Attributes:
        horizon: actions per chunk.
        dt_s: seconds between actions.
        max_speed_mps: TCP speed limit along the path, m/s.
        decel_mps2: deceleration before the final target, m/s².
        hover_m: height of the approach point above the cube's top centre, metres.
        cone_slope: horizontal/vertical ratio of the capture cone above the target.
        capture_m: minimum horizontal radius of the capture cone, metres.
    """

    horizon: int = 8
    dt_s: float = 0.1
    max_speed_mps: float = 0.15
    decel_mps2: float = 0.5
    hover_m: float = 0.10
    cone_slope: float = 0.2
    capture_m: float = 0.01


def _xyz(value: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(value, dtype=np.float64)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ShapeError(f"{name}: expected a finite (3,) position in metres (base frame), got {value!r}")
    return p


def expert_path(tcp_xyz: np.ndarray, cube_top_xyz: np.ndarray, config: ExpertConfig = ExpertConfig()) -> np.ndarray:  # noqa: B008
    """(M, 3) float64 waypoints (base frame, metres) from the TCP to the cube's top centre (see module doc)."""
    p0 = _xyz(tcp_xyz, "tcp_xyz")
    goal = _xyz(cube_top_xyz, "cube_top_xyz")
    height = p0[2] - goal[2]
    horizontal = float(np.linalg.norm(p0[:2] - goal[:2]))
    if height >= -config.capture_m and horizontal <= max(config.capture_m, config.cone_slope * max(height, 0.0)):
        return np.stack([p0, goal])
    hover = goal + np.array([0.0, 0.0, config.hover_m])
    points = [p0]
    if p0[2] < hover[2]:
        points.append(np.array([p0[0], p0[1], hover[2]]))
    points += [hover, goal]
    return np.stack(points)


def expert_actions(
    tcp_xyz: np.ndarray,
    cube_top_xyz: np.ndarray,
    config: ExpertConfig = ExpertConfig(),  # noqa: B008 - frozen, immutable default
) -> np.ndarray:
    """(horizon, 3) float32 ``ee_delta_xyz`` actions: target TCP position at step k minus ``tcp_xyz`` (metres).

    Pure function of its arguments (both (3,) metres, robot base frame).
    """
    path = expert_path(tcp_xyz, cube_top_xyz, config)
    seg = np.diff(path, axis=0)
    seg_len = np.linalg.norm(seg, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    total = float(cum[-1])

    # Arc length reached at each step: cruise at max speed, brake so that the speed at remaining distance d is
    # at most sqrt(2 * decel * d).
    s = np.zeros(config.horizon)
    for k in range(1, config.horizon):
        remaining = total - s[k - 1]
        step = min(config.max_speed_mps, np.sqrt(2.0 * config.decel_mps2 * remaining)) * config.dt_s
        s[k] = min(total, s[k - 1] + step)

    targets = np.empty((config.horizon, 3))
    for k, sk in enumerate(s):
        i = int(np.clip(np.searchsorted(cum, sk, side="right") - 1, 0, len(seg) - 1))
        frac = 0.0 if seg_len[i] == 0.0 else (sk - cum[i]) / seg_len[i]
        targets[k] = path[i] + np.clip(frac, 0.0, 1.0) * seg[i]
    return (targets - path[0]).astype(np.float32)


class ScriptedExpert:
    """Reach-and-touch expert producing :class:`ActionChunk` s in the ``ee_delta_xyz`` action space.

    Args:
        config: expert parameters (horizon 8, dt 0.1 s, 0.15 m/s by default).
        model_id: written into every chunk.
    """

    def __init__(self, config: ExpertConfig | None = None, model_id: str = "scripted_expert") -> None:
        self.config = config if config is not None else ExpertConfig()
        self.model_id = model_id

    def act(self, tcp_xyz: np.ndarray, cube_top_xyz: np.ndarray, t_obs_ns: int) -> ActionChunk:
        """Chunk for an observation at ``t_obs_ns``: TCP and cube top centre in the base frame, metres."""
        actions = expert_actions(tcp_xyz, cube_top_xyz, self.config)
        return ActionChunk(
            t_obs_ns=t_obs_ns,
            dt_s=self.config.dt_s,
            actions=actions,
            action_space=ACTION_SPACE,
            gripper=np.ones(self.config.horizon, dtype=np.float32),
            model_id=self.model_id,
        )
