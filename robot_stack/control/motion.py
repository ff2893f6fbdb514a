"""The motion core of one arm: chunk timing (TOPP-RA) and online transitions (ruckig) under one set of limits.

:class:`MotionPlanner` is what the :class:`~robot_stack.control.scheduler.ChunkScheduler` and the
:class:`~robot_stack.control.executor.Executor` plan with. Each kind of motion uses a fraction of the robot's
limits (:class:`MotionConfig`), all strictly inside what the
:class:`~robot_stack.control.safety.SafetyFilter` enforces, so that the filter only ever watches:

* chunks are timed within ``chunk_*`` (:func:`~robot_stack.control.timing.time_chunk`);
* transitions into chunks (start from rest, splice, late chunk, recovery) use ``join_*``, which must be at least
  the chunk fractions (a join lands on a chunk's state, which has to be within the join's limits);
* an extension past a chunk's last step comes to rest at ``extension_fraction`` of the acceleration and jerk
  limits, taking at least ``extend_min_s`` (the arm keeps moving along the chunk's motion while a late chunk may
  still arrive; the duration is otherwise set by the limits);
* stops (watchdog, :meth:`Executor.stop`) decelerate at ``stop_fraction``.

Every plan handed to an executor ends at rest (:meth:`MotionPlanner.chunk_plan` appends the extension).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from robot_stack.control.online import MotionLimits, OnlineGenerator
from robot_stack.control.plan import JointState, MotionPlan
from robot_stack.control.timing import ChunkTiming, TimingConfig, time_chunk
from robot_stack.errors import ConfigError, MotionError
from robot_stack.robots.base import JointLimits
from robot_stack.types import JointTrajectory

__all__ = ["MotionConfig", "MotionPlanner"]


@dataclass(frozen=True)
class MotionConfig:
    """Fractions (0, 1] of the robot's joint limits each kind of motion plans with (see the module docstring).

    Attributes:
        chunk_velocity, chunk_acceleration, chunk_jerk: timed chunks.
        join_velocity, join_acceleration, join_jerk: ruckig transitions into a chunk (>= the chunk fractions).
        stop_fraction: acceleration and jerk of stops (watchdog hold, executor stop).
        extension_fraction: acceleration and jerk of the come-to-rest after a chunk's last step.
        extend_min_s: the extension takes at least this long, seconds (0: as fast as ``extension_fraction``
            allows). Keep it below the executor's watchdog timeout.
        position_margin_rad: plans stay this far inside the joint position limits where they can: a chunk's path
            does not overshoot past it between steps, an extension brakes harder rather than cross it (keep it
            above the safety filter's ``margin_rad``). ruckig's open-source version has no position limits, so a
            join can still cross it (rarely, near a limit): the filter then clamps and logs a fault.
        timing: TOPP-RA settings.
    """

    chunk_velocity: float = 0.9
    chunk_acceleration: float = 0.8
    chunk_jerk: float = 0.8
    join_velocity: float = 0.95
    join_acceleration: float = 0.9
    join_jerk: float = 0.9
    stop_fraction: float = 0.8
    extension_fraction: float = 0.5
    extend_min_s: float = 0.25
    position_margin_rad: float = 0.025
    timing: TimingConfig = field(default_factory=TimingConfig)

    def __post_init__(self) -> None:
        names = (
            "chunk_velocity",
            "chunk_acceleration",
            "chunk_jerk",
            "join_velocity",
            "join_acceleration",
            "join_jerk",
            "stop_fraction",
            "extension_fraction",
        )
        for name in names:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value <= 1):
                raise ConfigError(f"MotionConfig.{name}: expected a fraction of the limits in (0, 1], got {value!r}")
        for kind in ("velocity", "acceleration", "jerk"):
            if getattr(self, f"join_{kind}") < getattr(self, f"chunk_{kind}"):
                raise ConfigError(
                    f"MotionConfig.join_{kind} must be >= chunk_{kind}: a join lands on a chunk's state, which must "
                    "be within the join's limits"
                )
        if not (np.isfinite(self.extend_min_s) and self.extend_min_s >= 0):
            raise ConfigError(f"MotionConfig.extend_min_s: expected seconds >= 0, got {self.extend_min_s}")
        if not (np.isfinite(self.position_margin_rad) and self.position_margin_rad >= 0):
            raise ConfigError(f"MotionConfig.position_margin_rad: expected rad >= 0, got {self.position_margin_rad}")


class MotionPlanner:
    """Chunk timing and ruckig transitions for one arm (one instance per thread: ruckig's state is not shared).

    Args:
        joint_names: the arm's joints.
        limits: the robot's joint limits.
        config: the fractions of ``limits`` to plan with.
    """

    def __init__(self, joint_names: Sequence[str], limits: JointLimits, config: MotionConfig | None = None) -> None:
        self.config = cfg = config or MotionConfig()
        self.joint_names = tuple(joint_names)
        self.robot_limits = limits
        self.chunk_limits = MotionLimits.of(limits, cfg.chunk_velocity, cfg.chunk_acceleration, cfg.chunk_jerk)
        self.join_limits = MotionLimits.of(limits, cfg.join_velocity, cfg.join_acceleration, cfg.join_jerk)
        self.stop_limits = MotionLimits.of(limits, 1.0, cfg.stop_fraction, cfg.stop_fraction)
        self.extension_limits = MotionLimits.of(limits, 1.0, cfg.extension_fraction, cfg.extension_fraction)
        #: the last resort of a join: just inside the robot's limits (what the safety filter enforces)
        self.ceiling_limits = MotionLimits.of(limits, 0.999, 0.999, 0.999)
        margin = min(cfg.position_margin_rad, 0.25 * float(np.min(limits.upper - limits.lower)))
        self.bounds = (limits.lower + margin, limits.upper - margin)
        self.generator = OnlineGenerator(self.joint_names, self.join_limits)

    def time(self, traj: JointTrajectory) -> ChunkTiming:
        """The chunk's steps timed within the chunk limits (TOPP-RA where the policy's timing is too fast)."""
        return time_chunk(traj, self.chunk_limits, self.config.timing, self.bounds)

    def within_bounds(self, plan: MotionPlan) -> bool:
        """Whether ``plan`` stays inside the position bounds (the limits tightened by ``position_margin_rad``)."""
        lo, hi = plan.position_range()
        return bool(np.all(lo >= self.bounds[0]) and np.all(hi <= self.bounds[1]))

    def extend(self, plan: MotionPlan) -> MotionPlan:
        """``plan`` followed by its extension: a come-to-rest along its final motion (ends at rest). Gentle
        (``extension_fraction``, at least ``extend_min_s``) unless that would carry the arm out of the position
        bounds: then as hard as the stop limits, then the join limits allow."""
        end = plan.end_state
        rest = self.generator.stop(end, plan.end_ns, self.extension_limits, self.config.extend_min_s)
        if not self.within_bounds(rest):
            for limits in (self.stop_limits, self.join_limits):
                rest = self.generator.stop(end, plan.end_ns, limits)
                if self.within_bounds(rest):
                    break
        return plan.then(rest)

    def chunk_plan(self, traj: JointTrajectory, policy_end_ns: int | None = None) -> MotionPlan:
        """A timed chunk plus its extension, ready for an executor. ``policy_end_ns`` (optional) marks an earlier
        end of the policy's own steps (in the chunk's own times; moved with the timing)."""
        timing = self.time(traj)
        plan = self.extend(timing.plan)
        if policy_end_ns is not None and timing.plan.policy_end_ns is not None:
            end = _retimed(traj, timing, int(policy_end_ns))
            plan = plan.with_policy_end(min(end, timing.plan.policy_end_ns))
        return plan

    def join(self, state: JointState, t_ns: int, target: MotionPlan) -> MotionPlan:
        """From ``state`` at ``t_ns`` onto ``target`` (see :meth:`OnlineGenerator.join`), within the join limits;
        a target that itself moves at the join limits somewhere (e.g. an earlier join, when a splice reaches the
        executor too late to be adopted) is joined within the robot's limits instead."""
        try:
            return self.generator.join(state, t_ns, target, self.join_limits)
        except MotionError:
            return self.generator.join(state, t_ns, target, self.ceiling_limits)

    def splice(self, prefix: MotionPlan, target: MotionPlan) -> MotionPlan:
        """``prefix`` (the part of the executing plan an executor will still follow), then a join from its end state
        onto ``target``: the plan an executor adopts as it is, because it continues exactly what it commands.
        Carries the target's ``policy_end_ns`` and gripper track. Raises MotionError if no join exists."""
        out = prefix.then(self.join(prefix.end_state, prefix.end_ns, target))
        end, grip_t, grip = target.policy_end_ns, target.gripper_t_ns, target.gripper
        return MotionPlan(out.joint_names, out.t0_ns, out.breaks, out.coeffs, end, grip_t, grip)

    def stop(self, state: JointState, t_ns: int) -> MotionPlan:
        """Come to rest from ``state`` at ``t_ns`` within the stop limits."""
        return self.generator.stop(state, t_ns, self.stop_limits)

    def move_to(self, state: JointState, t_ns: int, q_target: np.ndarray, fraction: float = 1.0) -> MotionPlan:
        """Move from ``state`` to rest at ``q_target`` within ``fraction`` of the join limits."""
        return self.generator.move_to(state, t_ns, q_target, self.join_limits.scaled(fraction, fraction, fraction))


def _retimed(traj: JointTrajectory, timing: ChunkTiming, t_ns: int) -> int:
    """Where the chunk time ``t_ns`` lies after timing: unchanged for a nominal timing, else mapped linearly from
    the chunk's original span onto its re-timed span (an approximation between steps)."""
    end = timing.plan.policy_end_ns
    first, last = int(traj.t_ns[0]), int(traj.t_ns[-1])
    if timing.method not in ("toppra", "stretch") or end is None or last <= first:
        return t_ns
    return first + round((t_ns - first) * (end - first) / (last - first))
