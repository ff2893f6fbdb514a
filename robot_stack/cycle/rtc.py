"""Real-time chunking, robot side: the prefix of the executing plan that will run while the server infers.

For a flow-matching model that accepts it (its metadata's ``flow_matching.rtc`` or, for a VLA, ``vla.rtc``:
:func:`robot_stack.policy.rtc.advertises_rtc`), every request carries ``rtc/prefix``: the plan the executor
follows, sampled at the new chunk's step times ``t_obs + k * dt`` for as many steps as the plan still carries the
policy's own steps (at most the horizon), in the model's action space; and ``rtc/delay_steps``: how many of them
will have executed when the chunk arrives (the online delay estimate, :class:`~robot_stack.cycle.latency
.DelayEstimator`, in steps). The server's denoising inpaints them, so the chunk that comes back continues the motion
the robot is making; the scheduler then splices it in from the executing plan as usual (its first steps are in the
past by then and are dropped).

Action spaces (the inverse of the decoders): ``joint_position`` (the plan's joint positions), ``joint_delta`` (minus
the observed joint positions), ``ee_delta_xyz`` (forward kinematics of the plan minus the observed TCP position,
base frame, metres). Other spaces (tokens, bins, tracks) are not flow-matching outputs: no prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.control.plan import MotionPlan
from robot_stack.errors import ConfigError
from robot_stack.policy.rtc import RTC_DELAY_STEPS, RTC_PREFIX, advertises_rtc
from robot_stack.types import RobotState

__all__ = ["RTC_SPACES", "RtcPrefix"]

#: Action spaces a prefix can be written in.
RTC_SPACES = ("joint_position", "joint_delta", "ee_delta_xyz")


@dataclass(frozen=True)
class RtcPrefix:
    """Builds the real-time-chunking fields of a request (see the module docstring).

    Attributes:
        action_space: the model's action space (one of :data:`RTC_SPACES`).
        horizon: steps per chunk; dt_s: seconds between them.
        fk_xyz: forward kinematics, (n,) rad -> (3,) m base frame (``ee_delta_xyz`` only).
    """

    action_space: str
    horizon: int
    dt_s: float
    fk_xyz: Callable[[np.ndarray], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.action_space not in RTC_SPACES:
            raise ConfigError(f"RtcPrefix: action space {self.action_space!r} has no prefix form; one of {RTC_SPACES}")
        if self.action_space == "ee_delta_xyz" and self.fk_xyz is None:
            raise ConfigError("RtcPrefix: ee_delta_xyz prefixes need forward kinematics (fk_xyz)")
        if self.horizon < 1 or not self.dt_s > 0:
            raise ConfigError(f"RtcPrefix: expected horizon >= 1 and dt_s > 0, got {self.horizon}, {self.dt_s}")

    @classmethod
    def for_model(
        cls, metadata: Mapping[str, Any], fk_xyz: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> RtcPrefix | None:
        """The builder for a served model (its ``metadata()``), or None when it does not take a prefix (neither
        ``flow_matching`` nor ``vla`` with ``rtc: true``, or an action space without a prefix form)."""
        if not advertises_rtc(metadata):
            return None
        space = str(metadata.get("action_space", ""))
        if space not in RTC_SPACES:
            return None
        return cls(space, int(metadata["horizon"]), float(metadata["dt_s"]), fk_xyz)

    def prefix(self, plan: MotionPlan | None, state: RobotState, t_obs_ns: int) -> np.ndarray | None:
        """(P, D) float32: ``plan`` at ``t_obs + k * dt`` for the steps it still carries the policy's own motion
        (``k < horizon``), in the action space relative to ``state`` (the chunk's observation); None when it
        carries none (no plan, or its policy part is over)."""
        if plan is None:
            return None
        end = plan.policy_end_ns if plan.policy_end_ns is not None else plan.end_ns
        t = int(t_obs_ns) + np.round(np.arange(self.horizon) * self.dt_s * 1e9).astype(np.int64)
        t = t[t <= end]
        if len(t) == 0:
            return None
        q, _, _ = plan.sample_many(t)
        early = t < plan.start_ns
        if np.any(early):
            # steps before this plan began (the observation was taken while the previous plan ran, which this one
            # continues): its start state carried back along its velocity and acceleration
            start = plan.sample(plan.start_ns)
            ds = ((t[early] - plan.start_ns) * 1e-9)[:, None]
            q[early] = start.q[None, :] + ds * start.v[None, :] + 0.5 * ds * ds * start.a[None, :]
        if self.action_space == "joint_position":
            out = q
        elif self.action_space == "joint_delta":
            out = q - np.asarray(state.q, dtype=np.float64)[None, :]
        else:
            assert self.fk_xyz is not None
            p0 = np.asarray(state.ee_pose.translation, dtype=np.float64)
            out = np.stack([self.fk_xyz(qk) for qk in q]) - p0[None, :]
        return out.astype(np.float32)

    def request_fields(
        self, plan: MotionPlan | None, state: RobotState, t_obs_ns: int, delay_steps: int
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """``({"rtc/prefix": ...}, {"rtc/delay_steps": d})`` for a request, ``d`` clipped to the prefix's length;
        two empty dicts without a prefix."""
        prefix = self.prefix(plan, state, t_obs_ns)
        if prefix is None:
            return {}, {}
        return {RTC_PREFIX: prefix}, {RTC_DELAY_STEPS: int(min(max(delay_steps, 0), len(prefix)))}
