"""Online, jerk-limited transitions with ruckig: start, join, stop, extension, point-to-point moves.

Every transition the stack makes between planned motions is generated here, from the *commanded* state (position,
velocity and acceleration of the plan being executed, never a filtered or measured one), with ruckig's
time-optimal jerk-limited trajectories. Their durations follow from the limits; nothing here has a fixed blend
time or a capped window:

* :meth:`OnlineGenerator.join` — from a state into a moving target plan (a chunk). The join time ``d`` is the
  smallest one found for which ruckig reaches the target's state *at* ``t + d`` (position, velocity and
  acceleration) within ``d``; the transition is then computed with ``minimum_duration = d``, so it lands exactly
  on the target at that time and the result is C2 there. A target that runs away faster than the arm can follow is
  joined at its end (plans end at rest). Covers start from rest, a late chunk, a splice with a large mismatch.
  With ``accept`` (e.g. the workspace-box model, :class:`~robot_stack.control.box_guard.BoxGuard`) the join time
  is the smallest one whose transition it accepts: a later landing on the target needs less haste.
* :meth:`OnlineGenerator.stop` — to rest along the current motion (ruckig's velocity interface, target velocity
  and acceleration zero): watchdog holds, stops, extensions past a chunk's last step (then with a minimum
  duration, so a late chunk finds the arm still moving).
* :meth:`OnlineGenerator.move_to` — rest-to-rest (or from any state) to a joint position: retreats.

Every result is a :class:`~robot_stack.control.plan.MotionPlan`: ruckig profiles are piecewise constant-jerk, so
they convert exactly into the plan's cubic pieces (:func:`trajectory_to_plan`).

Times: monotonic ns; positions rad, velocities rad/s, accelerations rad/s^2, jerk rad/s^3; (n,) float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import ruckig

from robot_stack.control.plan import MIN_PIECE_S, JointState, MotionPlan
from robot_stack.errors import ConfigError, MotionError
from robot_stack.robots.base import JointLimits

__all__ = ["MotionLimits", "OnlineGenerator", "trajectory_to_plan"]

#: A join lands within this much (s) of the time it was computed for before it is accepted.
_TIME_TOL_S = 1e-6
#: A join whose earliest transition ``accept`` refuses is tried this much later (s), growing by ``_LATER_GROWTH``.
_LATER_STEP_S = 0.01
_LATER_GROWTH = 1.25
#: A transition shorter than this (s) is skipped: the state already is the target (up to rounding residue, e.g. a
#: velocity of 1e-16 rad/s left at the end of a plan), and its pieces would be too short to represent.
NEGLIGIBLE_S = 1e-6


@dataclass(frozen=True)
class MotionLimits:
    """Velocity, acceleration and jerk bounds a generator plans with: (n,) float64, rad/s, rad/s^2, rad/s^3."""

    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray

    def __post_init__(self) -> None:
        for name in ("velocity", "acceleration", "jerk"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            if arr.ndim != 1 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
                raise ConfigError(f"MotionLimits.{name}: expected positive finite (n,) values, got {arr!r}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if not (self.velocity.shape == self.acceleration.shape == self.jerk.shape):
            raise ConfigError("MotionLimits: velocity, acceleration and jerk must have the same shape")

    @classmethod
    def of(
        cls, limits: JointLimits, velocity: float = 1.0, acceleration: float = 1.0, jerk: float = 1.0
    ) -> MotionLimits:
        """The robot's limits scaled by the given fractions (each in (0, 1])."""
        for name, f in (("velocity", velocity), ("acceleration", acceleration), ("jerk", jerk)):
            if not 0 < f <= 1:
                raise ConfigError(f"MotionLimits.of: {name} fraction must be in (0, 1], got {f}")
        return cls(limits.velocity * velocity, limits.acceleration * acceleration, limits.jerk * jerk)

    def scaled(self, velocity: float = 1.0, acceleration: float = 1.0, jerk: float = 1.0) -> MotionLimits:
        return MotionLimits(self.velocity * velocity, self.acceleration * acceleration, self.jerk * jerk)

    def admits(self, plan: MotionPlan, tolerance: float = 1e-6) -> bool:
        """Whether ``plan`` is C2 (no jump of position, velocity or acceleration between pieces: a jump is an
        unbounded derivative) and its exact peaks are within these limits (relative ``tolerance``)."""
        dq, dv, da = plan.max_jumps()
        if dq > 1e-9 or dv > 1e-6 or da > 1e-3:
            return False
        p = plan.peaks()
        f = 1.0 + tolerance
        return bool(
            np.all(p.velocity <= self.velocity * f)
            and np.all(p.acceleration <= self.acceleration * f)
            and np.all(p.jerk <= self.jerk * f)
        )


def trajectory_to_plan(traj: ruckig.Trajectory, joint_names: Sequence[str], t0_ns: int) -> MotionPlan:
    """The exact :class:`MotionPlan` of a calculated single-section ruckig trajectory starting at ``t0_ns``.

    Each degree of freedom is a sequence of constant-jerk phases (an optional two-phase brake, then seven); the plan's
    pieces are the union of all phase boundaries, with the state at each piece's start from ``at_time`` and the jerk
    of the phase it lies in."""
    duration = float(traj.duration)
    profiles = traj.profiles[0]
    bounds = []
    jerks = []
    for prof in profiles:
        t = np.concatenate([np.asarray(prof.brake.t, dtype=np.float64), np.asarray(prof.t, dtype=np.float64)])
        j = np.concatenate([np.asarray(prof.brake.j, dtype=np.float64), np.asarray(prof.j, dtype=np.float64)])
        bounds.append(np.cumsum(t))
        jerks.append(j)
    cuts = np.unique(np.concatenate([[0.0, duration], *bounds]))
    cuts = cuts[(cuts >= 0.0) & (cuts <= duration)]
    keep = np.append(True, np.diff(cuts) >= MIN_PIECE_S)
    cuts = cuts[keep]
    if cuts[-1] < duration:
        cuts[-1] = duration
    n = len(profiles)
    m = len(cuts) - 1
    states = np.array([traj.at_time(float(c)) for c in cuts[:-1]], dtype=np.float64).reshape(m, 3, n)
    mids = 0.5 * (cuts[:-1] + cuts[1:])
    jerk = np.empty((m, n))
    for d in range(n):
        k = np.minimum(np.searchsorted(bounds[d], mids), len(jerks[d]) - 1)
        jerk[:, d] = jerks[d][k]
    return MotionPlan.from_states(joint_names, t0_ns, cuts, states, jerk)


def _clip_rounding(values: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """``values`` with magnitudes over ``limit`` by no more than rounding (1e-9 relative) brought onto it."""
    over = np.abs(values) > limit
    if not np.any(over):
        return values
    rounding = over & (np.abs(values) <= limit * (1.0 + 1e-9))
    return np.where(rounding, np.sign(values) * limit, values)


class OnlineGenerator:
    """Ruckig transitions for one arm (not thread-safe: one instance per thread or process).

    Args:
        joint_names: the arm's joints (column order of every state).
        limits: the bounds transitions use by default (a fraction of the robot's limits, so that what the plan
            asks for stays strictly inside what the safety filter enforces).
    """

    def __init__(self, joint_names: Sequence[str], limits: MotionLimits) -> None:
        self.joint_names = tuple(joint_names)
        n = len(self.joint_names)
        if limits.velocity.shape != (n,):
            raise ConfigError(f"OnlineGenerator: limits for {limits.velocity.shape[0]} joints, arm has {n}")
        self.limits = limits
        self._otg = ruckig.Ruckig(n)
        self._inp = ruckig.InputParameter(n)
        self._traj = ruckig.Trajectory(n)
        self.calculations = 0
        #: whether the last :meth:`join` found a transition its ``accept`` accepted (True without one)
        self.join_accepted = True

    # --------------------------------------------------------------------------------------------- ruckig
    def _calculate(
        self,
        state: JointState,
        target: JointState | None,
        limits: MotionLimits,
        minimum_duration_s: float | None = None,
    ) -> float:
        """Calculate into ``self._traj``; ``target`` None = come to rest (velocity interface). Returns the duration."""
        inp = self._inp
        inp.current_position = state.q.tolist()
        inp.current_velocity = state.v.tolist()
        inp.current_acceleration = state.a.tolist()
        inp.max_velocity = limits.velocity.tolist()
        inp.max_acceleration = limits.acceleration.tolist()
        inp.max_jerk = limits.jerk.tolist()
        zero = [0.0] * len(self.joint_names)
        if target is None:
            inp.control_interface = ruckig.ControlInterface.Velocity
            inp.target_position = state.q.tolist()
            inp.target_velocity = zero
            inp.target_acceleration = zero
        else:
            inp.control_interface = ruckig.ControlInterface.Position
            inp.target_position = target.q.tolist()
            # a target exactly at a limit (a plan made within the same limits) may exceed it by rounding
            inp.target_velocity = _clip_rounding(target.v, limits.velocity).tolist()
            inp.target_acceleration = _clip_rounding(target.a, limits.acceleration).tolist()
        inp.minimum_duration = minimum_duration_s
        self.calculations += 1
        try:
            result = self._otg.calculate(inp, self._traj)
        except (RuntimeError, ruckig.RuckigError) as exc:  # invalid input (e.g. a target beyond the limits)
            raise MotionError(f"ruckig refused the transition: {exc}") from exc
        if result not in (ruckig.Result.Working, ruckig.Result.Finished):
            raise MotionError(
                f"ruckig could not compute the transition ({result}); from q={state.q.round(4).tolist()} "
                f"v={state.v.round(4).tolist()} a={state.a.round(3).tolist()}"
            )
        return float(self._traj.duration)

    def _plan(self, t_ns: int) -> MotionPlan:
        return trajectory_to_plan(self._traj, self.joint_names, t_ns)

    # -------------------------------------------------------------------------------------------- motions
    def stop(
        self, state: JointState, t_ns: int, limits: MotionLimits | None = None, minimum_duration_s: float = 0.0
    ) -> MotionPlan:
        """Come to rest from ``state`` at ``t_ns`` along the current motion (all joints stop together), within
        ``limits`` (default: the generator's), taking at least ``minimum_duration_s``. Ends at rest."""
        lim = limits or self.limits
        if not (np.any(state.v != 0.0) or np.any(state.a != 0.0)):
            return MotionPlan.hold(self.joint_names, state.q, t_ns)
        self._calculate(state, None, lim, minimum_duration_s or None)
        if self._traj.duration < NEGLIGIBLE_S:
            return MotionPlan.hold(self.joint_names, state.q, t_ns)
        return self._plan(t_ns)

    def move_to(
        self,
        state: JointState,
        t_ns: int,
        q_target: np.ndarray,
        limits: MotionLimits | None = None,
        minimum_duration_s: float = 0.0,
    ) -> MotionPlan:
        """Time-optimal move from ``state`` to rest at ``q_target`` ((n,) rad), within ``limits``. Ends at rest."""
        lim = limits or self.limits
        target = JointState.at_rest(q_target)
        duration = self._calculate(state, target, lim, minimum_duration_s or None)
        if duration < NEGLIGIBLE_S:
            return MotionPlan.hold(self.joint_names, target.q, t_ns)
        return self._plan(t_ns)

    def join(
        self,
        state: JointState,
        t_ns: int,
        target: MotionPlan,
        limits: MotionLimits | None = None,
        accept: Callable[[MotionPlan], bool] | None = None,
        lenient: bool = False,
    ) -> MotionPlan:
        """From ``state`` at ``t_ns`` onto ``target``: a ruckig transition that arrives on the target's state at
        the time it reaches it, then the target itself (see the module docstring). The result starts at ``t_ns``
        and keeps the target's ``policy_end_ns`` and gripper.

        ``accept`` (optional) judges the transition alone (a plan from ``t_ns`` to the landing): when it refuses the
        earliest one, later landings are tried (every ``_LATER_STEP_S``, growing, up to the target's end) and the
        first accepted is taken; when none is, the earliest, and :attr:`join_accepted` says so (False).
        ``lenient``: a target state beyond ``limits`` (limits gentler than the target's own) is no landing, the
        search goes on (at the latest to the target's end, at rest) instead of failing.

        Raises MotionError if ruckig fails (e.g. a target state outside ``limits``, unless ``lenient``)."""
        lim = limits or self.limits
        t0 = int(t_ns)
        d_min = max(0.0, (target.start_ns - t0) * 1e-9)
        d_end = max(d_min, (target.end_ns - t0) * 1e-9)

        def need_s(goal: JointState, minimum_s: float | None = None) -> float:
            """ruckig's duration onto ``goal`` (inf for a goal beyond the limits when lenient)."""
            try:
                return self._calculate(state, goal, lim, minimum_s)
            except MotionError:
                if not lenient:
                    raise
                return float("inf")

        def feasible(d: float) -> bool:
            """Whether ruckig lands on the target's state at t0 + d exactly (leaves the trajectory in _traj)."""
            goal = target.sample(t0 + round(d * 1e9))  # clamped: at or after its end, the end state
            if need_s(goal) > d + _TIME_TOL_S:
                return False
            if d < NEGLIGIBLE_S:
                return True
            return need_s(goal, d) <= d + 1e-9  # False in a blocked interval of a joint

        # the earliest join time d (seconds after t0) with feasible(d): a few fixed-point steps d <- T(d) from the
        # earliest possible time, then growth to a feasible time, then bisection down to 1 ms of the boundary
        lo, d = d_min, d_min
        hi = None
        for _ in range(4):
            if feasible(d):
                hi = d
                break
            lo = d
            goal = target.sample(t0 + round(d * 1e9))
            need = need_s(goal)
            d = min(max(need, d + 1e-3) if need < float("inf") else d + 0.01, d_end)
        step = max(d - lo, 0.01)
        while hi is None:
            if feasible(d):
                hi = d
            elif d >= d_end:
                # even the target's end state is not reachable by then: meet it where ruckig can
                goal = target.sample(target.end_ns)
                hi = max(self._calculate(state, goal, lim), d_end)
                d_end = hi
                if feasible(hi):
                    break
                raise MotionError(f"join: ruckig cannot land on the target's end state ({hi:.3f} s)")
            else:
                lo, d = d, min(d + step, d_end)
                step *= 1.5
        while hi - lo > 1e-3:
            mid = 0.5 * (lo + hi)
            if feasible(mid):
                hi = mid
            else:
                lo = mid
        d = hi
        if not feasible(d):  # leave the chosen transition in _traj
            raise MotionError(f"join: no transition at the chosen time {d:.4f} s")
        self.join_accepted = True
        if accept is not None and d >= NEGLIGIBLE_S and not accept(self._plan(t0)):
            d = self._later_accepted(d, d_end, t0, feasible, accept)
        t_join = t0 + round(d * 1e9)
        rest = target.after(t_join)
        if d < NEGLIGIBLE_S:
            return rest.with_gripper(target.gripper_t_ns, target.gripper)
        joined = self._plan(t0).then(rest)
        return MotionPlan(
            joined.joint_names,
            joined.t0_ns,
            joined.breaks,
            joined.coeffs,
            target.policy_end_ns,
            target.gripper_t_ns,
            target.gripper,
        )

    def _later_accepted(
        self,
        d: float,
        d_end: float,
        t0: int,
        feasible: Callable[[float], bool],
        accept: Callable[[MotionPlan], bool],
    ) -> float:
        """The first join time after ``d`` (s; up to ``d_end``, the target's end, included) whose transition is
        feasible and accepted, else ``d``; leaves the chosen transition in ``_traj``."""
        step = _LATER_STEP_S
        later = d
        while later < d_end:
            later = min(later + step, d_end)
            step *= _LATER_GROWTH
            try:
                if feasible(later) and accept(self._plan(t0)):
                    return later
            except MotionError:  # e.g. the target's state there is beyond the limits: not a landing
                pass
        self.join_accepted = False
        feasible(d)
        return d
