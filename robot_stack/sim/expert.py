"""Scripted expert for the reach-and-touch task (generates training labels; never runs in the demo).

The expert's chunk is a *pure function* of the observed TCP position and the cube's top-centre, both in the robot
base frame (metres), so the same function labels recorded data offline: :func:`expert_actions`.

Path: from the TCP to a *funnel point* straight above the cube's top centre, then straight down. The funnel point's
height above the top is ``min(hover_m, funnel_gain * horizontal offset)``: far away the arm approaches at the
hover height, and the better it is aligned the lower it may already be. The path is a continuous function of the TCP
position (no mode switches), so a learned imitation that is off by a few millimetres gets a correction of a few
millimetres — not a jump back up to the hover height — and a TCP above the funnel surface never goes below it
(no side approach into the cube).

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

__all__ = [
    "ExpertConfig",
    "ScriptedExpert",
    "expert_actions",
    "expert_path",
    "follow_path",
    "push_path",
    "tabletop_expert_actions",
]

ACTION_SPACE = "ee_delta_xyz"


@dataclass(frozen=True)
class ExpertConfig:
    """Parameters of the scripted expert.

    Attributes:
        horizon: actions per chunk.
        dt_s: seconds between actions.
        max_speed_mps: TCP speed limit along the path, m/s.
        decel_mps2: deceleration before the final target, m/s².
        hover_m: highest funnel point above the cube's top centre, metres.
        funnel_gain: height above the top allowed per metre of horizontal offset (funnel steepness).
    """

    horizon: int = 8
    dt_s: float = 0.1
    max_speed_mps: float = 0.15
    decel_mps2: float = 0.5
    hover_m: float = 0.10
    funnel_gain: float = 1.5


def _xyz(value: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(value, dtype=np.float64)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ShapeError(f"{name}: expected a finite (3,) position in metres (base frame), got {value!r}")
    return p


def expert_path(tcp_xyz: np.ndarray, cube_top_xyz: np.ndarray, config: ExpertConfig = ExpertConfig()) -> np.ndarray:  # noqa: B008
    """(M, 3) float64 waypoints (base frame, metres) from the TCP to the cube's top centre (see module doc)."""
    p0 = _xyz(tcp_xyz, "tcp_xyz")
    goal = _xyz(cube_top_xyz, "cube_top_xyz")
    horizontal = float(np.linalg.norm(p0[:2] - goal[:2]))
    funnel = goal + np.array([0.0, 0.0, min(config.hover_m, config.funnel_gain * horizontal)])
    return np.stack([p0, funnel, goal])


def expert_actions(
    tcp_xyz: np.ndarray,
    cube_top_xyz: np.ndarray,
    config: ExpertConfig = ExpertConfig(),  # noqa: B008 - frozen, immutable default
) -> np.ndarray:
    """(horizon, 3) float32 ``ee_delta_xyz`` actions: target TCP position at step k minus ``tcp_xyz`` (metres).

    Pure function of its arguments (both (3,) metres, robot base frame).
    """
    return follow_path(expert_path(tcp_xyz, cube_top_xyz, config), config)


def follow_path(path: np.ndarray, config: ExpertConfig = ExpertConfig()) -> np.ndarray:  # noqa: B008
    """(horizon, 3) float32 ``ee_delta_xyz`` actions along ``path`` ((M, 3) waypoints, base frame, metres, starting
    at the TCP): cruise at ``max_speed_mps``, brake at ``decel_mps2`` before the last waypoint."""
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


#: Pushing along +y: TCP height over the table (m), stand-off of the TCP behind the object's centre before the push
#: (m; the leading finger's outer face is 5.6 cm from the TCP), how far behind the centre the TCP may be and still
#: count as lined up for the push (m), and how far ahead of the object's centre the push aims (m).
PUSH_HEIGHT_M = 0.02
PUSH_STANDOFF_M = 0.11
PUSH_LINED_UP_M = 0.05
PUSH_AHEAD_M = 0.10


def push_path(tcp_xyz: np.ndarray, centre_xyz: np.ndarray, config: ExpertConfig = ExpertConfig()) -> np.ndarray:  # noqa: B008
    """(M, 3) waypoints (base frame, metres) that push the object centred at ``centre_xyz`` along +y.

    Not yet lined up behind it (TCP low, within 2 cm in x, more than :data:`PUSH_LINED_UP_M` behind the centre in
    y): through a funnel point above the pre-push point ``PUSH_STANDOFF_M`` behind the object (as for a touch),
    down to it, then on through the object's place. Lined up: straight on along +y at the push height, aiming
    :data:`PUSH_AHEAD_M` past the object's current centre, so the push continues as long as it moves."""
    p0 = _xyz(tcp_xyz, "tcp_xyz")
    c = _xyz(centre_xyz, "centre_xyz")
    ahead = np.array([c[0], c[1] + PUSH_AHEAD_M, PUSH_HEIGHT_M])
    lined_up = p0[2] < PUSH_HEIGHT_M + 0.02 and abs(p0[0] - c[0]) < 0.02 and p0[1] < c[1] - PUSH_LINED_UP_M
    if lined_up:
        return np.stack([p0, ahead])
    start = np.array([c[0], c[1] - PUSH_STANDOFF_M, PUSH_HEIGHT_M])
    horizontal = float(np.linalg.norm(p0[:2] - start[:2]))
    funnel = start + np.array([0.0, 0.0, min(config.hover_m, config.funnel_gain * horizontal)])
    return np.stack([p0, funnel, start, ahead])


def tabletop_expert_actions(
    tcp_xyz: np.ndarray,
    kind: str,
    goal_xyz: np.ndarray,
    config: ExpertConfig = ExpertConfig(),  # noqa: B008
) -> np.ndarray:
    """The tabletop suite's expert: ``kind`` ``touch`` (``goal_xyz`` = the target's top centre: the reach expert)
    or ``push`` (``goal_xyz`` = the pushed object's centre: :func:`push_path`); (horizon, 3) float32
    ``ee_delta_xyz`` metres (see :meth:`robot_stack.sim.tabletop.TabletopTask.expert_goal`)."""
    if kind == "touch":
        return expert_actions(tcp_xyz, goal_xyz, config)
    if kind == "push":
        return follow_path(push_path(tcp_xyz, goal_xyz, config), config)
    raise ShapeError(f"expert: task kind {kind!r} unknown; expected touch or push")


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
