"""Recovery from a policy stuck at a limit: detect it cycle by cycle, retreat to the start posture, resume.

:class:`RecoveryConfig` says when the policy counts as stuck and how the retreat moves; :class:`RecoveryMonitor`
keeps the per-run state (blocked cycles, the TCP and goal when the run began, the safety filter's counters) and
hands the retreat to the trajectory sink.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_stack.clock import Clock
from robot_stack.control.online import MotionLimits, OnlineGenerator
from robot_stack.control.plan import JointState
from robot_stack.errors import ConfigError
from robot_stack.kinematics.reach import ReachStats
from robot_stack.types import JointTrajectory

log = logging.getLogger("robot_stack.cycle.recovery")

__all__ = ["RecoveryConfig", "RecoveryMonitor", "retreat_trajectory"]


@dataclass(frozen=True)
class RecoveryConfig:
    """When the policy counts as stuck at a limit, and the retreat that gets it going again.

    A cycle is *blocked* when the stack had to change most of what the policy asked for: at least
    ``min_changed_fraction`` of the chunk's steps were raised over the floor, clamped or dropped by the decoder's
    reach policy (``reach_stats``), or the safety filter held the arm at a position limit or the workspace box on
    at least that fraction of the control ticks since the previous cycle — *and* the arm is neither at the policy's
    goal nor getting closer to it. With ``reach_stats`` recording the TCP and each chunk's last target (the goal,
    raised over the floor), a cycle whose TCP is within ``near_goal_m`` of its goal, with the safety filter not
    holding the arm at a limit or the box, does not count (a policy
    touching down on its target asks for steps below the floor: raised, but the arm is where the policy wants it;
    such a cycle does not end a blocked run either), and a blocked run starts over when the TCP is ``progress_m``
    closer to the goal than the TCP was when the run began while the goal stayed within ``2 * progress_m`` of the
    run's first goal (a policy wandering along a limit after a moving goal is not making progress).
    After ``blocked_cycles`` blocked cycles in a row the policy has driven
    the arm where it cannot act from (a state outside what it was trained on; its chunks only push into the limit).
    The cycle then retreats: a ruckig point-to-point move from the commanded state (position, velocity and
    acceleration of the executing plan) to rest at ``home_q``, within ``speed_fraction`` of every velocity,
    acceleration and jerk limit (:meth:`~robot_stack.control.scheduler.ChunkScheduler.move_to`: the executing plan is
    kept for the hand-over prefix, so the motion stays continuous). No policy request is made
    while it runs (outcome ``"recovering"``); the policy resumes ``resume_lead_s`` before the retreat ends, so its
    first chunk takes over without a stop. Every retreat is logged and counted (:attr:`PolicyCycle.recoveries`).

    Attributes:
        home_q: (n,) float64 rad, the posture the policy starts from (e.g. ``panda.HOME_Q``).
        reach_stats: the decoder's :class:`~robot_stack.kinematics.reach.ReachStats` (None: only the safety
            filter's signal is used).
        blocked_cycles: consecutive blocked cycles that trigger a retreat.
        min_changed_fraction: a cycle is blocked from this fraction (0..1] of changed steps or limited ticks.
        speed_fraction: fraction (0..1] of the joint limits the retreat uses.
        resume_lead_s: the policy runs again this long (s) before the retreat ends.
        near_goal_m: a cycle whose TCP is within this distance (m) of the policy's goal does not count as blocked
            (unless the safety filter held the arm on ``min_changed_fraction`` of the ticks).
        progress_m: a blocked run starts over when the TCP got this much (m) closer to a steady goal during it.
        blocked_s: a blocked run this long (s, process clock) of at least 3 cycles also triggers the retreat, however
            few cycles it had (on a loaded host cycles slow down; the arm is stuck all the same); None = cycles only.
    """

    home_q: np.ndarray
    reach_stats: ReachStats | None = field(default=None, compare=False)
    blocked_cycles: int = 15
    min_changed_fraction: float = 0.5
    speed_fraction: float = 0.7
    resume_lead_s: float = 0.3
    near_goal_m: float = 0.03
    progress_m: float = 0.02
    blocked_s: float | None = None

    def __post_init__(self) -> None:
        if self.blocked_cycles < 1 or not 0 < self.min_changed_fraction <= 1 or not 0 < self.speed_fraction <= 1:
            raise ConfigError(
                "RecoveryConfig: expected blocked_cycles >= 1, min_changed_fraction and speed_fraction in (0, 1], "
                f"got {self.blocked_cycles}, {self.min_changed_fraction}, {self.speed_fraction}"
            )
        if not (np.isfinite(self.resume_lead_s) and self.resume_lead_s >= 0):
            raise ConfigError(f"RecoveryConfig.resume_lead_s: expected seconds >= 0, got {self.resume_lead_s}")
        for name in ("near_goal_m", "progress_m", "blocked_s"):
            value = getattr(self, name)
            if value is None and name == "blocked_s":
                continue
            if not (np.isfinite(value) and value >= 0):
                raise ConfigError(f"RecoveryConfig.{name}: expected metres >= 0, got {value}")


def retreat_trajectory(
    joint_names: Sequence[str],
    q_from: np.ndarray,
    q_to: np.ndarray,
    limits: Any,
    t_start_ns: int,
    speed_fraction: float = 0.5,
    dt_s: float = 0.02,
) -> JointTrajectory:
    """A rest-to-rest joint-space move ``q_from`` -> ``q_to`` ((n,) rad) starting at ``t_start_ns``, as waypoints
    every ``dt_s`` seconds (and at its end), for sinks that take waypoints (a ROS topic).

    The move is ruckig's time-optimal jerk-limited profile within ``speed_fraction`` of the velocity, acceleration
    and jerk limits of ``limits`` (a :class:`~robot_stack.robots.base.JointLimits`; every joint arrives at once),
    sampled on an even grid at most ``dt_s`` apart;
    its duration follows from the distance and the limits. In-process sinks hand the exact plan over instead
    (:meth:`~robot_stack.control.scheduler.ChunkScheduler.move_to`)."""
    names = tuple(joint_names)
    f = float(speed_fraction)
    generator = OnlineGenerator(names, MotionLimits.of(limits, f, f, f))
    plan = generator.move_to(JointState.at_rest(np.asarray(q_from, dtype=np.float64)), int(t_start_ns), q_to)
    # evenly spaced (no sliver interval at the end: a spline through the waypoints would swing there)
    pieces = max(int(np.ceil((plan.end_ns - plan.start_ns) / (dt_s * 1e9))), 1)
    t_ns = np.round(np.linspace(plan.start_ns, max(plan.end_ns, plan.start_ns + pieces), pieces + 1)).astype(np.int64)
    positions, _, _ = plan.sample_many(t_ns)
    return JointTrajectory(names, t_ns, positions)


class RecoveryMonitor:
    """The blocked-run bookkeeping of :class:`RecoveryConfig` for one policy loop.

    Args:
        config: when a cycle is blocked and how the retreat moves.
        clock: the process clock.
        joint_names, limits: the arm's joints and :class:`~robot_stack.robots.base.JointLimits`.
        limited_counts: ``(ticks held at a position limit or the workspace box, ticks)`` of the safety filter since
            it started, or None when the executor is not in this process (only the decoder's signal is used).
        retreat: hands over the move to rest at ``(q_target, speed_fraction)`` and returns the time (ns, process
            clock) the move ends, or None when it was refused.
    """

    def __init__(
        self,
        config: RecoveryConfig,
        clock: Clock,
        joint_names: Sequence[str],
        limits: Any,
        limited_counts: Callable[[], tuple[int, int]] | None,
        retreat: Callable[[np.ndarray, float], int | None],
    ) -> None:
        self.config = config
        self.clock = clock
        self.joint_names = tuple(joint_names)
        self.limits = limits
        self._limited_counts = limited_counts
        self._retreat = retreat
        self.recoveries = 0
        self._blocked = 0
        self._blocked_since_ns = 0  # process clock when the current blocked run began
        self._blocked_start: tuple[np.ndarray, np.ndarray] | None = None  # (TCP, goal) m when the blocked run began
        self._recover_until_ns: int | None = None
        self._limited_prev: tuple[int, int] | None = None  # safety filter (limited ticks, ticks) at the last call

    def recovering(self, step: int) -> bool:
        """Whether a retreat is still running (no policy request is made meanwhile); logs when it ends."""
        if self._recover_until_ns is None:
            return False
        if self.clock.now_ns() < self._recover_until_ns:
            return True
        self._recover_until_ns = None
        self._limited_prev = None
        log.info("cycle %d: retreat nearly done; the policy runs again", step)
        return False

    def _safety_limited_fraction(self) -> float:
        """Fraction of control ticks since the last call on which the safety filter held the arm at a position
        limit or the workspace box (0 without a filter in this process)."""
        if self._limited_counts is None:
            return 0.0
        now = self._limited_counts()
        prev, self._limited_prev = self._limited_prev, now
        if prev is None or now[1] <= prev[1]:
            return 0.0
        return min(1.0, (now[0] - prev[0]) / (now[1] - prev[1]))

    def _update_run(self, changed: float, limited: float) -> bool:
        """Count this cycle into the blocked run; return whether it is blocked (see :class:`RecoveryConfig`)."""
        cfg = self.config
        if max(changed, limited) < cfg.min_changed_fraction:
            self._blocked = 0
            return False
        pair = cfg.reach_stats.last_tcp_goal if cfg.reach_stats is not None else None
        if pair is not None:
            tcp, goal = pair
            if limited < cfg.min_changed_fraction and np.linalg.norm(goal - tcp) <= cfg.near_goal_m:
                # at the goal, the safety filter not holding the arm: touching down on the target, neither blocked
                # nor free (held at a limit or the workspace box, the arm is stuck wherever the policy aims)
                return False
            start = self._blocked_start
            if self._blocked == 0 or start is None:
                self._blocked_start = (tcp, goal)
                self._blocked_since_ns = self.clock.now_ns()
            elif (
                np.linalg.norm(goal - start[1]) <= 2.0 * cfg.progress_m
                and np.linalg.norm(goal - start[0]) - np.linalg.norm(goal - tcp) >= cfg.progress_m
            ):
                # the arm got closer to a goal the policy kept since the run began: progress, the run starts over
                self._blocked, self._blocked_start = 0, (tcp, goal)
                self._blocked_since_ns = self.clock.now_ns()
        if self._blocked == 0:
            self._blocked_since_ns = self.clock.now_ns()
        self._blocked += 1
        return True

    def _run_is_long_enough(self) -> bool:
        cfg = self.config
        long_enough = (
            cfg.blocked_s is not None
            and self._blocked >= 3
            and self.clock.now_ns() - self._blocked_since_ns >= cfg.blocked_s * 1e9
        )
        return self._blocked >= cfg.blocked_cycles or long_enough

    def check(self, step: int) -> bool:
        """After a cycle that handed over a trajectory: count it, and start a retreat after enough blocked cycles
        in a row. Returns whether a retreat started (the caller drops what it prefetched before it)."""
        cfg = self.config
        changed = cfg.reach_stats.last_fraction if cfg.reach_stats is not None else 0.0
        limited = self._safety_limited_fraction()
        if not self._update_run(changed, limited) or not self._run_is_long_enough():
            return False
        n_blocked, self._blocked = self._blocked, 0
        start = self.clock.now_ns()
        end_ns = self._retreat(cfg.home_q, cfg.speed_fraction)
        if end_ns is None:
            log.error("cycle %d: the policy is stuck at a limit but the retreat was refused; policy continues", step)
            return False
        self.recoveries += 1
        duration_s = (end_ns - start) / 1e9
        self._recover_until_ns = end_ns - round(cfg.resume_lead_s * 1e9)
        log.warning(
            "cycle %d: the policy is stuck at a limit (%d cycles in a row with >= %.0f%% of its chunk changed: "
            "reach %.0f%%, safety-limited ticks %.0f%%); retreating to the start posture over %.2f s, then resuming "
            "(recovery %d)",
            step,
            n_blocked,
            cfg.min_changed_fraction * 100,
            changed * 100,
            limited * 100,
            duration_s,
            self.recoveries,
        )
        return True
