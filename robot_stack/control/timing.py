"""Time-parameterisation of decoded chunks under the velocity, acceleration and jerk limits (TOPP-RA).

A decoded chunk is a path with a clock: step ``k`` is meant for ``t_k``. :func:`time_chunk` keeps that clock
wherever the limits allow it and slows down only where they do not:

1. the path is the C2 cubic spline through the steps, parameterised by the policy's own time ``s`` (seconds
   after the first step; ``not-a-knot`` ends from 4 steps, natural below);
2. if that nominal timing is within the limits (exact peaks, :meth:`MotionPlan.peaks`), it is kept as it is;
3. otherwise TOPP-RA (``toppra``, time-optimal path parameterisation by reachability analysis) finds the fastest
   timing of the same path under the joint velocity and acceleration limits **and** ``ds/dt <= 1`` (a virtual
   path coordinate equal to ``s`` with velocity limit 1: never faster than the policy asked), starting and ending
   at the policy's speed where that is feasible; the timed path is interpolated by a C2 cubic spline in time
   through TOPP-RA's grid (end velocities clamped to the path's);
4. the exact peaks of the result are checked against the limits, jerk included; whatever interpolation overshoot
   is left is removed by stretching time uniformly by the smallest sufficient factor (velocity scales with 1/k,
   acceleration 1/k^2, jerk 1/k^3), so the returned plan is within the limits by construction.

With a workspace box (a :class:`~robot_stack.control.box_guard.BoxGuard`) the nominal timing is kept only if the
safety filter's box model accepts every sample of it; otherwise TOPP-RA also bounds the path speed near the box's
faces (:meth:`BoxGuard.speed_bounds`: the speed from which the filter's modelled stop still ends inside), and a
result still outside the model (interpolation between grid points) is stretched uniformly until it is inside.

The chunk's steps keep their order and positions; only their times move later (never earlier) when a chunk asks
for more than the arm can do. ``policy_end_ns`` of the result is the (re-timed) time of the last step.

Times: monotonic ns; positions rad; (N, n) float64 arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline, PchipInterpolator

from robot_stack.control.box_guard import BOX_ROUNDING_M, BoxGuard
from robot_stack.control.online import MotionLimits
from robot_stack.control.plan import MotionPlan
from robot_stack.errors import ConfigError, MotionError
from robot_stack.types import JointTrajectory

log = logging.getLogger("robot_stack.control.timing")

__all__ = ["ChunkTiming", "TimingConfig", "preload", "time_chunk"]

_TOPPRA: Any = None


def preload() -> None:
    """Import toppra now (about a second: it imports matplotlib), before a control thread shares this process's
    GIL, rather than at the first chunk that needs re-timing."""
    _toppra_module()


def _toppra_module() -> Any:
    """toppra, imported on first use (it imports matplotlib: a second at start-up that a process which never
    re-times a chunk, such as the real-time executor, should not pay)."""
    global _TOPPRA
    if _TOPPRA is None:
        import toppra
        import toppra.algorithm
        import toppra.constraint

        # toppra reports recoverable numerical trouble as warnings; time_chunk handles every failure itself
        logging.getLogger("toppra").setLevel(logging.ERROR)
        _TOPPRA = toppra
    return _TOPPRA


@dataclass(frozen=True)
class TimingConfig:
    """How chunks are timed.

    Attributes:
        grid_per_step: TOPP-RA grid points per chunk step (the grid has at least ``min_grid`` and at most
            ``max_grid`` points).
        min_grid, max_grid: bounds on the TOPP-RA grid size.
        toppra_acceleration_margin: TOPP-RA plans with this fraction of the acceleration limit (the spline through
            its grid overshoots its piecewise-constant path acceleration a little; the final uniform stretch
            removes whatever is left).
        max_uniform_stretch: a chunk whose own timing needs at most this uniform stretch (time factor) to be within
            the limits is stretched uniformly instead of re-timed by TOPP-RA (as good for a chunk only a little too
            fast, and about ten times cheaper).
    """

    grid_per_step: int = 10
    min_grid: int = 40
    max_grid: int = 400
    toppra_acceleration_margin: float = 0.9
    max_uniform_stretch: float = 1.15

    def __post_init__(self) -> None:
        if self.grid_per_step < 1 or self.min_grid < 2 or self.max_grid < self.min_grid:
            raise ConfigError(
                "TimingConfig: expected grid_per_step >= 1 and 2 <= min_grid <= max_grid, got "
                f"{self.grid_per_step}, {self.min_grid}, {self.max_grid}"
            )
        if not self.max_uniform_stretch >= 1.0:
            raise ConfigError(f"TimingConfig.max_uniform_stretch: expected >= 1, got {self.max_uniform_stretch}")
        if not 0 < self.toppra_acceleration_margin <= 1:
            raise ConfigError(
                f"TimingConfig.toppra_acceleration_margin: expected (0, 1], got {self.toppra_acceleration_margin}"
            )


@dataclass(frozen=True)
class ChunkTiming:
    """A timed chunk and how it was timed.

    Attributes:
        plan: the timed path (starts at the first step, ends at the last; not at rest in general).
        method: ``"nominal"`` (the policy's timing was within the limits), ``"toppra"`` (re-timed), ``"stretch"``
            (TOPP-RA failed numerically: the policy's timing stretched uniformly) or ``"point"`` (a single step: a
            short rest there).
        stretch: the final uniform time factor (1.0 = none).
        slowdown: how much longer than the policy's timing the chunk now takes (1.0 = not at all).
    """

    plan: MotionPlan
    method: str
    stretch: float
    slowdown: float


_CONSTRAINTS: dict[tuple[bytes, bytes, float], list[object]] = {}


#: A chunk the box model cannot accept at any speed up to this uniform slow-down (its path itself leaves the box)
#: is handed on as it is (the safety filter brakes it: a logged fault).
_MAX_BOX_STRETCH = 8.0


def _constraints(limits: MotionLimits, acceleration_margin: float) -> list[object]:
    """TOPP-RA joint velocity and acceleration constraints for the augmented path (built once per limits)."""
    key = (limits.velocity.tobytes(), limits.acceleration.tobytes(), acceleration_margin)
    cached = _CONSTRAINTS.get(key)
    if cached is None:
        vlim = np.append(limits.velocity, 1.0)  # the virtual coordinate s: ds/dt <= 1
        alim = np.append(limits.acceleration * acceleration_margin, 1e4)
        toppra = _toppra_module()
        cached = [
            toppra.constraint.JointVelocityConstraint(np.stack([-vlim, vlim], axis=1)),
            toppra.constraint.JointAccelerationConstraint(np.stack([-alim, alim], axis=1)),
        ]
        if len(_CONSTRAINTS) > 16:
            _CONSTRAINTS.clear()
        _CONSTRAINTS[key] = cached
    return cached


def _path_spline(s: np.ndarray, q: np.ndarray) -> CubicSpline:
    bc = "not-a-knot" if len(s) >= 4 else "natural"
    return CubicSpline(s, q, axis=0, bc_type=bc)


class _AugmentedPath:
    """The chunk's path for TOPP-RA: the joints, plus the virtual coordinate ``s`` itself (velocity limit 1).
    Implements toppra's geometric-path interface (``__call__(s, order)``, ``dof``, ``path_interval``)."""

    waypoints = None

    def __init__(self, path: CubicSpline | PchipInterpolator, s_end: float, n: int) -> None:
        self._path = path
        self._interval = np.array([0.0, s_end])
        self._n = n

    def __call__(self, path_positions: float | np.ndarray, order: int = 0) -> np.ndarray:
        ss = np.atleast_1d(np.asarray(path_positions, dtype=np.float64))
        q = np.asarray(self._path(ss, order)).reshape(len(ss), self._n)
        virtual = ss if order == 0 else np.full(len(ss), 1.0 if order == 1 else 0.0)
        out = np.hstack([q, virtual[:, None]])
        return out if np.ndim(path_positions) else out[0]

    def eval(self, ss: np.ndarray) -> np.ndarray:
        return self(ss, 0)

    def evald(self, ss: np.ndarray) -> np.ndarray:
        return self(ss, 1)

    def evaldd(self, ss: np.ndarray) -> np.ndarray:
        return self(ss, 2)

    @property
    def dof(self) -> int:
        return self._n + 1

    @property
    def path_interval(self) -> np.ndarray:
        return self._interval


def _stretch_needed(plan: MotionPlan, limits: MotionLimits) -> float:
    p = plan.peaks()
    return max(
        1.0,
        float(np.max(p.velocity / limits.velocity)),
        float(np.sqrt(np.max(p.acceleration / limits.acceleration))),
        float(np.cbrt(np.max(p.jerk / limits.jerk))),
    )


def time_chunk(
    traj: JointTrajectory,
    limits: MotionLimits,
    config: TimingConfig | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
    box: BoxGuard | None = None,
) -> ChunkTiming:
    """Time ``traj`` (its steps, in order) within ``limits``; see the module docstring.

    ``bounds`` ((n,) lower and upper rad, optional): where the C2 spline through the steps would leave them (cubic
    overshoot between steps that are inside), the path is the shape-preserving PCHIP interpolant instead, which
    stays within the range of the steps; that path is C1 only, so it is always re-timed (TOPP-RA, then the C2 spline
    in time through its grid and the final stretch keep the result within every limit).

    ``box`` (optional): keep the plan within the safety filter's workspace-box model (see the module docstring);
    where the C2 spline's TCP path leaves the box further than the steps themselves (overshoot at a corner the
    decoder clamped onto a face), the path is the PCHIP interpolant as well.

    Never fails on finite input: where TOPP-RA fails numerically, the policy's timing is stretched uniformly."""
    cfg = config or TimingConfig()
    names = tuple(traj.joint_names)
    t_ns = np.asarray(traj.t_ns, dtype=np.int64)
    q = np.asarray(traj.positions, dtype=np.float64)
    t_first = int(t_ns[0])
    grip = None if traj.gripper is None else np.asarray(traj.gripper, dtype=np.float64)
    if len(t_ns) == 1:
        plan = MotionPlan.hold(names, q[0], t_first).with_policy_end(t_first)
        if grip is not None:
            plan = plan.with_gripper(t_ns, grip)
        return ChunkTiming(plan, "point", 1.0, 1.0)
    s = (t_ns - t_first) * 1e-9
    path: CubicSpline | PchipInterpolator = _path_spline(s, q)
    nominal = MotionPlan.from_scipy(names, t_first, path)
    c2 = True
    if bounds is not None:
        lo, hi = nominal.position_range()
        outside = (lo < bounds[0]) | (hi > bounds[1])
        inside = (q.min(axis=0) >= bounds[0]) & (q.max(axis=0) <= bounds[1])
        if np.any(outside & inside):
            path, c2 = PchipInterpolator(s, q, axis=0), False
            nominal = MotionPlan.from_scipy(names, t_first, path)
    if c2 and box is not None and box.path_outside(nominal) > box.points_outside(q) + BOX_ROUNDING_M:
        # the spline overshoots the steps out of the box (a corner where the decoder clamped targets onto a face):
        # no timing brings that back inside, the shape-preserving path does not overshoot
        path, c2 = PchipInterpolator(s, q, axis=0), False
        nominal = MotionPlan.from_scipy(names, t_first, path)
    box_ok = box is None or box.accepts(nominal)
    if c2 and box_ok and limits.admits(nominal, tolerance=0.0):
        plan = nominal.with_policy_end(int(t_ns[-1]))
        if grip is not None:
            plan = plan.with_gripper(t_ns, grip)
        return ChunkTiming(plan, "nominal", 1.0, 1.0)

    if c2 and box_ok and _stretch_needed(nominal, limits) <= cfg.max_uniform_stretch:
        # a chunk only a little too fast: stretching its own timing uniformly is as good and 10x cheaper
        plan, grid_s, times_s, method = nominal, s, s, "stretch"
    else:
        plan, grid_s, times_s, method = _retime(path, s, q, names, t_first, limits, cfg, box)
    k = _stretch_needed(plan, limits)
    if k > 1.0:
        k *= 1.0 + 1e-9
        plan = plan.time_scaled(k)
    if box is not None:
        k_box = _box_stretch(plan, box)
        if k_box > 1.0:
            plan = plan.time_scaled(k_box)
            k *= k_box
    # where each step now lies: the grid maps s -> t (monotone), then the uniform stretch
    step_t = t_first + np.round(np.interp(s, grid_s, times_s) * k * 1e9).astype(np.int64)
    step_t[-1] = plan.end_ns
    plan = plan.with_policy_end(int(step_t[-1]))
    if grip is not None:
        plan = plan.with_gripper(step_t, grip)
    slowdown = (plan.end_ns - t_first) / max(int(t_ns[-1]) - t_first, 1)
    log.debug("chunk re-timed (%s): %.2fx the policy's duration (final stretch %.3f)", method, slowdown, k)
    return ChunkTiming(plan, method, k, float(slowdown))


def _box_stretch(plan: MotionPlan, box: BoxGuard) -> float:
    """The smallest uniform time factor (>= 1) after which ``plan`` is within the box model; 1.0 when none up to
    :data:`_MAX_BOX_STRETCH` is (the path itself leaves the box: logged, the filter will brake it)."""
    k = box.stretch_needed(plan, _MAX_BOX_STRETCH)
    if k is None:
        excess, at = box.plan_excess(plan)
        log.warning(
            "chunk path leaves the workspace box model even %gx slower (by %.1f mm, %.3f s into the chunk): its "
            "steps or the path between them are outside the box's braking margin; handed on as it is",
            _MAX_BOX_STRETCH,
            excess * 1e3,
            (at - plan.start_ns) * 1e-9,
        )
        return 1.0
    return k


def _retime(
    path: CubicSpline | PchipInterpolator,
    s: np.ndarray,
    q: np.ndarray,
    names: tuple[str, ...],
    t_first: int,
    limits: MotionLimits,
    cfg: TimingConfig,
    box: BoxGuard | None = None,
) -> tuple[MotionPlan, np.ndarray, np.ndarray, str]:
    """TOPP-RA's timing as a C2 spline in time: (plan, grid path positions s, their times, method)."""
    try:
        times_s, grid_q, v0, v1 = _toppra(path, s, q, limits, cfg, box)
        timed = CubicSpline(times_s, grid_q, axis=0, bc_type=((1, v0), (1, v1)))
        grid_s = np.linspace(0.0, s[-1], len(times_s))
        return MotionPlan.from_scipy(names, t_first, timed), grid_s, times_s, "toppra"
    except MotionError as exc:
        # numerically degenerate for TOPP-RA: stretch the policy's own timing uniformly instead (always feasible)
        log.warning("TOPP-RA failed on a chunk (%s); stretching its timing uniformly instead", exc)
        grid_s = np.linspace(0.0, s[-1], max(len(s), 2) * cfg.grid_per_step)
        dense = CubicSpline(grid_s, path(grid_s), axis=0, bc_type=((1, path(0.0, 1)), (1, path(s[-1], 1))))
        return MotionPlan.from_scipy(names, t_first, dense), grid_s, grid_s, "stretch"


def _toppra(
    path: CubicSpline | PchipInterpolator,
    s: np.ndarray,
    q: np.ndarray,
    limits: MotionLimits,
    cfg: TimingConfig,
    box: BoxGuard | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TOPP-RA on the path augmented with the virtual coordinate ``s`` (velocity limit 1; with ``box``, lower near
    the box's faces: :meth:`BoxGuard.speed_bounds`). Returns the grid times (s), the grid positions (rad) and the
    start/end joint velocities (rad/s)."""
    steps = len(s)
    n_grid = int(np.clip((steps - 1) * cfg.grid_per_step, cfg.min_grid, cfg.max_grid))
    geometric = _AugmentedPath(path, float(s[-1]), q.shape[1])
    toppra = _toppra_module()
    gridpoints = np.linspace(0.0, s[-1], n_grid + 1)
    constraints = _constraints(limits, cfg.toppra_acceleration_margin)
    if box is not None:
        constraints = [*constraints, _box_constraint(toppra, path, gridpoints, limits, box)]
    algo = toppra.algorithm.TOPPRA(
        constraints,
        geometric,
        gridpoints=gridpoints,
        solver_wrapper="seidel",  # toppra's own LP solver (naming it skips a search for optional ones)
        parametrizer="ParametrizeConstAccel",
    )
    grid = algo.gridpoints
    feasible = algo.compute_feasible_sets()
    # only the upper bounds are used (toppra's last-stage lower bound can come out NaN on perfectly good paths)
    if feasible is None or np.isnan(feasible[:, 1]).any():
        raise MotionError("TOPP-RA: the chunk's path has no feasible speed somewhere (degenerate input)")
    # start and end at the policy's speed where feasible (a little inside the feasible set: its boundary is where
    # TOPP-RA's controllable-set recursion is numerically fragile), else as fast as feasible, else from/to rest
    sd_start = 0.98 * float(np.sqrt(min(1.0, max(feasible[0, 1], 0.0))))
    sd_end = 0.98 * float(np.sqrt(min(1.0, max(feasible[-1, 1], 0.0))))
    result = None
    # (the end of the feasible set itself is rarely controllable from the start: try a little below it first)
    for end in (0.7 * sd_end, 0.4 * sd_end, 0.0):
        start = sd_start
        for _ in range(2):
            _, sd, _, controllable = algo.compute_parameterization(start, end, return_data=True)
            if sd is not None and not np.isnan(sd).any():
                result = sd
                break
            if controllable is None or np.isnan(controllable).any():
                break
            start = min(start, 0.98 * float(np.sqrt(max(controllable[0, 1], 0.0))))
        if result is not None:
            break
    if result is None:
        raise MotionError("TOPP-RA found no parameterisation of the chunk within the limits")
    sd = np.maximum(result, 0.0)
    ds = np.diff(grid)
    mean = 0.5 * (sd[:-1] + sd[1:])
    if np.any(mean <= 0.0):
        raise MotionError("TOPP-RA parameterisation stops on the path (zero speed between grid points)")
    times = np.append(0.0, np.cumsum(ds / mean))
    grid_q = path(grid)
    d_path = path(grid, 1)
    return times, grid_q, d_path[0] * sd[0], d_path[-1] * sd[-1]


#: The box's path-speed bound never goes below this (a bound of 0 would stop the path: TOPP-RA fails; a path that
#: needs it leaves the box, and the final check hands it on as it is).
_MIN_BOX_SPEED = 0.02


def _box_constraint(
    toppra: Any, path: CubicSpline | PchipInterpolator, grid: np.ndarray, limits: MotionLimits, box: BoxGuard
) -> object:
    """A TOPP-RA velocity constraint on the augmented path: the joints' limits unchanged, the virtual coordinate's
    speed bounded by :meth:`BoxGuard.speed_bounds` at each grid point (linear in between)."""
    bound = np.maximum(box.speed_bounds(path(grid), path(grid, 1)), _MIN_BOX_SPEED)
    joints = np.stack([-limits.velocity, limits.velocity], axis=1)

    def vlim(s_at: float) -> np.ndarray:
        sd = float(np.interp(s_at, grid, bound))
        return np.vstack([joints, [[-sd, sd]]])

    return toppra.constraint.JointVelocityConstraintVarying(vlim)
