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

With a workspace box (``box``: the safety filter's box model, :class:`~robot_stack.control.box_guard.BoxGuard`)
chunks are timed so that the filter's modelled stop from every state ends inside the box, and an extension comes to
rest as gently as that model allows (the gentle come-to-rest first, then harder ones), so the filter never brakes
the plan near a face either. A stop from a state the model accepts, at any deceleration at least the model's,
ends where the model says or short of it: stops need no check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from robot_stack.control.box_guard import BoxGuard
from robot_stack.control.online import MotionLimits, OnlineGenerator
from robot_stack.control.plan import JointState, MotionPlan
from robot_stack.control.timing import ChunkTiming, TimingConfig, time_chunk
from robot_stack.errors import ConfigError, MotionError
from robot_stack.robots.base import JointLimits
from robot_stack.types import JointTrajectory

__all__ = ["MotionConfig", "MotionPlanner"]

log = logging.getLogger("robot_stack.control.motion")

#: Fractions of the join's acceleration and jerk limits tried, in order, when no join within the full ones stays
#: within the workspace-box model.
_GENTLE_JOIN_FRACTIONS = (0.5, 0.25, 0.1)


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
        box: the safety filter's workspace-box model, when it has a box: plans keep within it (module docstring).
    """

    def __init__(
        self,
        joint_names: Sequence[str],
        limits: JointLimits,
        config: MotionConfig | None = None,
        box: BoxGuard | None = None,
    ) -> None:
        self.config = cfg = config or MotionConfig()
        self.box = box
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
        return time_chunk(traj, self.chunk_limits, self.config.timing, self.bounds, self.box)

    def within_bounds(self, plan: MotionPlan) -> bool:
        """Whether ``plan`` stays inside the position bounds (the limits tightened by ``position_margin_rad``)."""
        lo, hi = plan.position_range()
        return bool(np.all(lo >= self.bounds[0]) and np.all(hi <= self.bounds[1]))

    def extend(self, plan: MotionPlan) -> MotionPlan:
        """``plan`` followed by its extension: a come-to-rest along its final motion (ends at rest). Gentle
        (``extension_fraction``, at least ``extend_min_s``) unless that would carry the arm out of the position
        bounds or, with a box, out of the box model: then as fast as ``extension_fraction`` allows, then as hard as
        the stop limits, then the join limits allow."""
        end = plan.end_state
        tries = (
            (self.extension_limits, self.config.extend_min_s),
            (self.extension_limits, 0.0),
            (self.stop_limits, 0.0),
            (self.join_limits, 0.0),
        )
        for limits, min_s in tries:
            rest = self.generator.stop(end, plan.end_ns, limits, min_s)
            if self.within_bounds(rest) and (self.box is None or self._box_accepts(rest)):
                break
        else:
            if self.box is not None and self.within_bounds(rest):
                log.warning(
                    "extension: even the hardest come-to-rest from the chunk's end leaves the workspace-box model "
                    "(TCP %s m); the safety filter will brake it (a fault)",
                    np.round(self.box.braking.fk_xyz(rest.end_state.q), 4).tolist(),
                )
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
        executor too late to be adopted) is joined within the robot's limits instead.

        With a box, the transition must stay within the box model: the join lands as early as the model accepts
        its transition (a later landing needs less haste), else a gentler one (lower acceleration and jerk) is
        taken, else the arm first stops (a stop from a state the model accepts stays within it) and joins from
        rest. Only when none of these is accepted is the earliest join returned (logged: the filter will brake
        it)."""
        plan, accepted = self._join(state, t_ns, target)
        if accepted:
            return plan
        stop = self.stop(state, t_ns)
        if self._box_accepts(stop):
            try:
                after, accepted = self._join(stop.end_state, stop.end_ns, target)
            except MotionError:
                accepted = False
            if accepted:
                end, grip_t, grip = target.policy_end_ns, target.gripper_t_ns, target.gripper
                out = stop.then(after)
                return MotionPlan(out.joint_names, out.t0_ns, out.breaks, out.coeffs, end, grip_t, grip)
        log.warning(
            "join at %.3f s: no transition onto the target stays within the workspace-box model, not even after a "
            "stop; the safety filter will brake it (a fault)",
            t_ns * 1e-9,
        )
        return plan

    def _join(self, state: JointState, t_ns: int, target: MotionPlan) -> tuple[MotionPlan, bool]:
        """:meth:`join` without the stop: (the join, whether the box model accepts its transition)."""
        gen = self.generator
        accept = None if self.box is None else self._box_accepts
        try:
            plan = gen.join(state, t_ns, target, self.join_limits, accept)
        except MotionError:
            plan = gen.join(state, t_ns, target, self.ceiling_limits, accept)
        if gen.join_accepted:
            return plan, True
        # no landing time makes the join's haste acceptable to the box model (typically: catching up with a chunk
        # that moves on toward a face): a gentler catch-up (lower acceleration and jerk, the same velocity limits,
        # so that any state of the target can be landed on) peaks slower
        for fraction in _GENTLE_JOIN_FRACTIONS:
            try:
                gentle_limits = self.join_limits.scaled(1.0, fraction, fraction)
                # lenient: where the target accelerates harder than the gentler limits, it is landed on later
                gentle = gen.join(state, t_ns, target, gentle_limits, accept, lenient=True)
            except MotionError:
                continue
            if gen.join_accepted:
                return gentle, True
        return plan, False

    def _box_accepts(self, plan: MotionPlan) -> bool:
        """Whether every sample of ``plan`` is within the workspace-box model (a join's transition)."""
        assert self.box is not None
        return self.box.accepts(plan)

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
