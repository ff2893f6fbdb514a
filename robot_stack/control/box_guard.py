"""Plans that keep a workspace box by construction: the safety filter's box model applied while planning.

The :class:`~robot_stack.control.safety.SafetyFilter` does not only keep the TCP inside a workspace box: at every
tick it asks where a stop from the commanded state would end (:class:`~robot_stack.control.safety.BoxBraking`: a
proportional joint-space stop at half the acceleration limits, after a jerk ramp) and brakes the arm early when that
point lies outside the box shrunk by its margin. Keeping the plan's *positions* inside the box is therefore not
enough for the filter to stay a monitor: a plan that approaches a face fast and decelerates on it harder than the
model assumes (chunks are timed at up to 80 % of the acceleration limits, joins at 90 %), or an extension that
glides to rest past the last step, is braked although its positions stay inside. :class:`BoxGuard` gives the
planner the same model:

* :meth:`BoxGuard.speed_bounds` — the fastest path speed at each point of a chunk's path from which the model's
  stop still ends inside (a ray cast along the path tangent), which
  :func:`~robot_stack.control.timing.time_chunk` hands to TOPP-RA as a velocity constraint, so chunks slow down
  near a face only where they must;
* :meth:`BoxGuard.plan_excess` — how far the model's stop leaves the box at the worst sample of a finished plan,
  the check every timed chunk, extension and join passes (:class:`~robot_stack.control.motion.MotionPlanner`);
* :meth:`BoxGuard.stretch_needed` — the smallest uniform slow-down after which a plan passes it.

The guard aims ``tolerance_m`` further inside than the filter brakes: room for sampling the plan every
``sample_s`` and for the filter measuring its margin from the previous tick (the filter's velocities are backward
differences over the control period: a plan's velocity at ``t`` minus ``a dt / 2``, which is included). Whole plans
are judged with the arm's batched forward kinematics (``BoxBraking.fk_xyz_many``): about a millisecond per plan.

Times: seconds; positions rad; TCP metres in the robot base frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from robot_stack.control.plan import MotionPlan
from robot_stack.control.safety import BoxBraking, SafetyFilter
from robot_stack.errors import ConfigError

__all__ = ["BOX_ROUNDING_M", "BOX_TOLERANCE_M", "BoxGuard", "box_guard_of"]

#: Plans aim this far (m) inside where the safety filter starts braking (see the module docstring).
BOX_TOLERANCE_M = 1e-3
#: An excess (m) this small is rounding (of the forward kinematics and of the plan's pieces), not leaving the box.
BOX_ROUNDING_M = 1e-6
#: Path speeds are bounded by bisection on the stop's length to this many halvings.
_BISECTIONS = 14


@dataclass(frozen=True)
class _Samples:
    """A plan sampled for the box model: times (ns), positions, velocities, accelerations ((m, n)), TCPs ((m, 3))."""

    t_ns: np.ndarray
    q: np.ndarray
    v: np.ndarray
    a: np.ndarray
    tcp: np.ndarray


@dataclass(frozen=True)
class BoxGuard:
    """The safety filter's box model for a planner (see the module docstring).

    Attributes:
        braking: the filter's stop model (:attr:`SafetyFilter.box_braking`).
        period_s: the executor's control period, seconds (the filter's velocities are differences over it, and its
            stop ramp includes one period).
        tolerance_m: plans aim this far inside where the filter brakes, m.
        sample_s: finished plans are checked at this spacing, seconds.
    """

    braking: BoxBraking
    period_s: float
    tolerance_m: float = BOX_TOLERANCE_M
    sample_s: float = 0.004
    _aim: BoxBraking = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ConfigError(f"BoxGuard.period_s: expected a positive control period in seconds, got {self.period_s}")
        if not (math.isfinite(self.tolerance_m) and self.tolerance_m >= 0):
            raise ConfigError(f"BoxGuard.tolerance_m: expected metres >= 0, got {self.tolerance_m}")
        if not (math.isfinite(self.sample_s) and self.sample_s > 0):
            raise ConfigError(f"BoxGuard.sample_s: expected seconds > 0, got {self.sample_s}")
        object.__setattr__(self, "_aim", self.braking.tightened(self.tolerance_m))

    @property
    def ramp_s(self) -> float:
        """The stop's ramp at the control period, seconds (:meth:`BoxBraking.ramp_s`)."""
        return self._aim.ramp_s(self.period_s)

    # ---------------------------------------------------------------------------------------------- judging
    def excess(self, q: np.ndarray, v: np.ndarray) -> float:
        """How far (m, worst axis) the model's stop from joint positions ``q`` (rad) at joint velocity ``v`` (rad/s,
        as the filter measures it) ends further outside the aimed box than the TCP is now (<= 0: the filter would
        not brake). The filter's own rule: a TCP inside may not stop outside, one in the margin band may not stop
        further out."""
        aim = self._aim
        allowed = aim.outside(aim.fk_xyz(q))
        return float(np.max(aim.stop_outside(q, v, self.ramp_s) - allowed))

    def _sample(self, plan: MotionPlan, from_ns: int | None) -> _Samples:
        start = plan.start_ns if from_ns is None else max(int(from_ns), plan.start_ns)
        step = max(round(self.sample_s * 1e9), 1)
        t = np.append(np.arange(start, plan.end_ns, step, dtype=np.int64), plan.end_ns)
        q, v, a = plan.sample_many(t)
        return _Samples(t, q, v, a, self._aim.tcp_many(q))

    def _excesses(self, s: _Samples, slow: float = 1.0, only: np.ndarray | None = None) -> np.ndarray:
        """(m,) :meth:`excess` of the samples of ``s`` (those at the indices ``only``; the others are -inf) as the
        filter measures it (``v - a dt / 2``), on the plan slowed uniformly by ``slow`` (velocities / slow,
        accelerations / slow^2)."""
        aim = self._aim
        idx = np.arange(len(s.q)) if only is None else only
        v = s.v[idx] / slow - s.a[idx] * (0.5 * self.period_s / (slow * slow))
        t_stop = np.max(np.abs(v) / (aim.acceleration * aim.fraction), axis=1)
        d = v * (0.5 * t_stop + self.ramp_s)[:, None]  # the stops' joint displacements
        out = np.full(len(s.q), -math.inf)
        if len(idx):
            stop = aim.tcp_many(s.q[idx] + d)
            out[idx] = np.max(aim.outside(stop) - aim.outside(s.tcp[idx]), axis=1)
        return out

    def plan_excess(self, plan: MotionPlan, from_ns: int | None = None) -> tuple[float, int]:
        """The worst :meth:`excess` over samples of ``plan`` every ``sample_s`` (and its end) from ``from_ns``
        (default its start): (metres, the sample's time in ns)."""
        s = self._sample(plan, from_ns)
        e = self._excesses(s)
        k = int(np.argmax(e))
        return float(e[k]), int(s.t_ns[k])

    def points_outside(self, q: np.ndarray) -> float:
        """How far (m, worst point and axis) the TCPs of joint positions ``q`` ((m, n) rad) lie outside the aimed box
        (0 when all are inside): where the plan itself is, whatever its speed."""
        return float(np.max(self._aim.outside(self._aim.tcp_many(np.asarray(q, dtype=np.float64)))))

    def path_outside(self, plan: MotionPlan) -> float:
        """:meth:`points_outside` of ``plan``'s samples every ``sample_s``: how far the path itself leaves the aimed
        box (no timing brings a stop back inside from there)."""
        return float(np.max(self._aim.outside(self._sample(plan, None).tcp)))

    def accepts(self, plan: MotionPlan) -> bool:
        """Whether every sample of ``plan`` is within the model (:meth:`plan_excess` <= 0, up to rounding)."""
        return self.plan_excess(plan)[0] <= BOX_ROUNDING_M

    def stretch_needed(self, plan: MotionPlan, max_stretch: float, precision: float = 1.02) -> float | None:
        """The smallest uniform time factor in ``[1, max_stretch]`` (to ``precision``) after which ``plan`` is within
        the model — slower is closer to it: the modelled stop shrinks with the speed — or None when even
        ``max_stretch`` is not (the path itself leaves the box). Judged on one sampling of ``plan``: the slowed
        plan's samples are the same positions with scaled velocities and accelerations."""
        s = self._sample(plan, None)
        failing = np.flatnonzero(self._excesses(s) > BOX_ROUNDING_M)  # only these can fail at a larger stretch
        if len(failing) == 0:
            return 1.0
        if np.max(self._excesses(s, max_stretch, failing)) > BOX_ROUNDING_M:
            return None
        lo, hi = 1.0, max_stretch
        while hi / lo > precision:
            mid = math.sqrt(lo * hi)
            still = np.flatnonzero(self._excesses(s, mid, failing) > BOX_ROUNDING_M)
            if len(still) == 0:
                hi = mid
            else:
                lo, failing = mid, still
        return hi

    def speed_bounds(self, q: np.ndarray, dq_ds: np.ndarray, cap: float = 1.0) -> np.ndarray:
        """The fastest path speed ``ds/dt`` (up to ``cap``) at each point of a path from which the model's stop
        still ends inside: ``(m,)`` for positions ``q`` ((m, n) rad) and path tangents ``dq_ds`` ((m, n) rad per
        unit of the path coordinate).

        At path speed ``sd`` the joints move at ``v = dq_ds sd``; the model's stop then covers
        ``dq_ds (m sd^2 / 2 + ramp sd)`` with ``m = max_i |dq_ds_i| / (fraction a_i)``: a ray from ``q`` along the
        tangent whose length grows with ``sd``. The longest admissible length is found by bisection (the TCP's
        excess along the ray, all points at once), then solved for ``sd``. Where even a stop from rest is outside
        (the path itself leaves the box) the bound is 0."""
        aim, ramp = self._aim, self.ramp_s
        q = np.asarray(q, dtype=np.float64)
        u = np.asarray(dq_ds, dtype=np.float64)
        slope = np.max(np.abs(u) / (aim.acceleration * aim.fraction), axis=1)  # the m above, per point
        full = 0.5 * slope * cap * cap + ramp * cap  # the stop's length at speed ``cap``
        allowed = aim.outside(aim.tcp_many(q))

        def fails(length: np.ndarray, at: np.ndarray) -> np.ndarray:
            stop = aim.tcp_many(q[at] + length[:, None] * u[at])
            return np.max(aim.outside(stop) - allowed[at], axis=1) > 0.0

        out = np.full(len(q), float(cap))
        at = np.flatnonzero(slope > 0.0)
        at = at[fails(full[at], at)]
        if len(at) == 0:
            return out
        lo, hi = np.zeros(len(at)), full[at].copy()
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            bad = fails(mid, at)
            hi = np.where(bad, mid, hi)
            lo = np.where(bad, lo, mid)
        m = slope[at]
        out[at] = (-ramp + np.sqrt(ramp * ramp + 2.0 * m * lo)) / m
        return out


def box_guard_of(safety: SafetyFilter, period_s: float) -> BoxGuard | None:
    """The :class:`BoxGuard` of a safety filter's workspace box at control period ``period_s`` (s); None when the
    filter has no box."""
    braking = safety.box_braking
    return None if braking is None else BoxGuard(braking, period_s)
