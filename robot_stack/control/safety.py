"""The last line before the robot: a joint-command filter that enforces limits and never intervenes silently.

It is a *monitor*: the plans it receives are within the limits by construction (chunks timed by TOPP-RA,
transitions by ruckig: :mod:`robot_stack.control.motion`), so on nominal input it changes nothing — a feasible
command passes bit for bit. Every intervention is a fault: counted by kind, kept in :attr:`SafetyFilter.events`
(a :class:`SafetyEvent` each) and logged; the executor's stats report them under ``faults``.

Every call of :meth:`SafetyFilter.filter` takes a desired joint position set-point and returns one that respects,
relative to the previous *output* (the filter keeps that state) and the control period ``dt``:

1. finite values of the right shape — otherwise :class:`SafetyError`, the command never reaches the robot;
2. position limits tightened by ``margin_rad`` (also a braking bound: the velocity toward a limit is capped so
   the joint can still stop before it at the acceleration limit);
3. velocity ``|dq| <= v_max``, acceleration ``|ddq| <= a_max`` and jerk ``|dddq| <= j_max`` (divided differences
   of consecutive outputs over the real time between them: ``filter(q, dt_s=...)``; a late tick is judged for the
   time that really passed, never as one nominal period);
4. an optional TCP workspace box (needs an ``fk_xyz`` callable), handled *inside* the velocity stage like the
   position limits: the TCP speed toward each face is capped by a braking curve (deceleration
   ``BOX_BRAKE_FRACTION``) so the arm stops on the face; the acceleration and jerk stages run after it, so the box
   never breaks a dynamic limit (tested: random commands pushing through a box stay within every limit and
   the TCP within 1 mm of the box).

When limits conflict the priority is position > velocity > acceleration > jerk. Feasible commands pass
unchanged. A command the output cannot follow (a step, or a lag built up by clamping) is approached along a
discrete braking curve at 80 % of the acceleration limit and, close in, exponentially (time constant 20 ms), so
the output settles on it without overshoot or limit cycles; the velocity cap leaves room to ramp acceleration
down at the jerk limit. In the tests (random steps across the whole range, 500 Hz and 1 kHz) every limit holds.

Each intervention is counted by kind, exactly; warnings are logged at most once per ``log_interval_s`` per kind
with the number of interventions since the last message. An intervention is a tick where the *command itself*
breaks a limit: its position is outside the (tightened) range, its own velocity (difference of consecutive
commands) is beyond the velocity cap or the braking curve toward a joint limit, its own acceleration or jerk is
beyond the limit, or the workspace box braking changes it. The ticks after an intervention, in which the output
merely closes the lag it left behind while the command itself is feasible, are not interventions; they are
counted separately as ``catch_up_ticks`` (:meth:`SafetyFilter.stats`), so that the counts measure real limiting.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import ConfigError, SafetyError
from robot_stack.robots.base import JointLimits
from robot_stack.types import RobotState

log = logging.getLogger("robot_stack.control.safety")

__all__ = ["BOX_BRAKE_FRACTION", "INTERVENTION_KINDS", "BoxBraking", "SafetyEvent", "SafetyFilter", "WorkspaceBox"]

#: Names of the counters reported by :meth:`SafetyFilter.stats`.
INTERVENTION_KINDS: tuple[str, ...] = (
    "position",
    "velocity",
    "acceleration",
    "jerk",
    "workspace",
    "rejected_shape",
    "rejected_nonfinite",
)

#: Braking curves use this fraction of the acceleration limit; the rest is slack for the discrete last step.
_BRAKE_FRACTION = 0.8
#: Rate (1/s) of the exponential approach onto a command the output lags behind (time constant 1/rate).
_CATCH_UP_HZ = 50.0
#: The box braking plans a proportional stop at this fraction of the acceleration limits (the rest: tracking slack).
BOX_BRAKE_FRACTION = 0.5
#: The box braking aims this far (m) inside each face: slack for the curvature of the TCP path within one tick.
_BOX_MARGIN_M = 1e-5
_EPS = 1e-9  # changes smaller than this (rad) are float noise, not interventions
_ROUNDING = 1e-12  # an output this close (rad) to a feasible command is that command re-integrated with rounding


@dataclass(frozen=True)
class SafetyEvent:
    """One intervention of the safety filter: a fault, since plans are feasible by construction.

    Attributes:
        t_ns: when it happened (``time.monotonic_ns``).
        kind: one of :data:`INTERVENTION_KINDS`.
        detail: what was commanded and what was enforced.
    """

    t_ns: int
    kind: str
    detail: str


@dataclass(frozen=True)
class WorkspaceBox:
    """Axis-aligned box the TCP must stay in, base frame, metres.

    Attributes:
        lower: (3,) float64 min corner (x, y, z).
        upper: (3,) float64 max corner.
    """

    lower: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        lo = np.array(self.lower, dtype=np.float64)
        hi = np.array(self.upper, dtype=np.float64)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ConfigError(f"WorkspaceBox: expected finite (3,) corners in metres, got {lo!r} / {hi!r}")
        if np.any(lo >= hi):
            raise ConfigError(f"WorkspaceBox: lower {lo.tolist()} must be below upper {hi.tolist()} on every axis")
        lo.setflags(write=False)
        hi.setflags(write=False)
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)

    def outside_by(self, xyz: np.ndarray) -> float:
        """Distance (m) by which point ``xyz`` lies outside the box (0 inside), infinity-norm per axis summed."""
        return float(np.sum(np.maximum(0.0, self.lower - xyz) + np.maximum(0.0, xyz - self.upper)))


@dataclass(frozen=True)
class BoxBraking:
    """How the safety filter judges a TCP state against a workspace box: where a stop from it would end.

    The stop decelerates every joint proportionally (the joint path is the line along ``v``) at
    :data:`BOX_BRAKE_FRACTION` of the tightest acceleration limit, after ramping the acceleration over at the jerk
    limit (``2 a / j``) plus one control period; it covers ``v (T / 2 + t_ramp)`` with ``T = max_i |v_i| /
    (fraction a_i)``. The filter brakes whenever that stop would end outside the box shrunk by ``margin_m``; a
    planner that keeps every state of its plans within this model (:mod:`robot_stack.control.box_plan`) is never
    braked. One model, used by both, so that they cannot drift apart.

    Attributes:
        box: the workspace box (base frame, m).
        margin_m: the stop must end this far inside each face, m.
        acceleration, jerk: (n,) the joint limits the stop is planned with (rad/s^2, rad/s^3).
        fk_xyz: (n,) joint positions (rad) -> (3,) TCP position in the base frame (m).
        fraction: the share of the acceleration limits the stop uses.
        fk_xyz_many: optional batched ``fk_xyz``: (m, n) rad -> (m, 3) m (``PinocchioIK.fk_xyz_many``), for planners
            that judge whole plans (:meth:`tcp_many`).
    """

    box: WorkspaceBox
    margin_m: float
    acceleration: np.ndarray
    jerk: np.ndarray
    fk_xyz: Callable[[np.ndarray], np.ndarray]
    fraction: float = BOX_BRAKE_FRACTION
    fk_xyz_many: Callable[[np.ndarray], np.ndarray] | None = None

    def tcp_many(self, q: np.ndarray) -> np.ndarray:
        """(m, 3) TCP positions (m) of (m, n) joint positions (rad): ``fk_xyz_many``, else ``fk_xyz`` row by row."""
        if self.fk_xyz_many is not None:
            return self.fk_xyz_many(q)
        return np.array([self.fk_xyz(row) for row in q]).reshape(len(q), 3)

    def ramp_s(self, dt: float) -> float:
        """Seconds the stop spends turning the acceleration over at the jerk limit, plus one control period ``dt``."""
        return float(np.max(2.0 * self.acceleration / self.jerk)) + dt

    def stop_displacement(self, v: np.ndarray, ramp_s: float) -> np.ndarray:
        """(n,) rad the joints travel in the stop from joint velocity ``v`` ((n,) rad/s), ``ramp_s`` from
        :meth:`ramp_s`."""
        t_stop = float(np.max(np.abs(v) / (self.acceleration * self.fraction)))
        return v * (0.5 * t_stop + ramp_s)

    def outside(self, xyz: np.ndarray) -> np.ndarray:
        """How far (m, per axis: (3,)) ``xyz`` ((3,) m; or (m, 3): then (m, 3)) lies outside the box shrunk by the
        margin."""
        m = self.margin_m
        lo, hi = self.box.lower + m, self.box.upper - m
        return np.maximum(0.0, lo - xyz) + np.maximum(0.0, xyz - hi)

    def stop_outside(self, q: np.ndarray, v: np.ndarray, ramp_s: float) -> np.ndarray:
        """How far (m, per axis: (3,)) the TCP ends outside the box shrunk by the margin after the stop from joint
        positions ``q`` (rad) moving at ``v`` (rad/s)."""
        return self.outside(self.fk_xyz(q + self.stop_displacement(v, ramp_s)))

    def tightened(self, extra_m: float) -> BoxBraking:
        """The same model aiming ``extra_m`` further inside every face (a planner's tolerance)."""
        return dataclasses.replace(self, margin_m=self.margin_m + float(extra_m))


class SafetyFilter:
    """Clamp joint position commands to position/velocity/acceleration/jerk limits and a TCP workspace box.

    Args:
        limits: the arm's joint limits ((n,) arrays).
        margin_rad: position limits are tightened by this much on each side, rad.
        workspace: optional TCP box; requires ``fk_xyz``.
        fk_xyz: callable mapping (n,) joint positions (rad) to the (3,) TCP position in the base frame (m),
            e.g. ``PinocchioIK.fk_xyz``.
        period_s: control period the finite differences are taken over, seconds (the executor sets it).
        log_interval_s: at most one warning per intervention kind per this many seconds (every intervention is
            counted and kept in :attr:`events` regardless).
        workspace_margin_m: the box braking aims this far inside each face, m.
        event_history: how many recent interventions :attr:`events` keeps.
        fk_xyz_many: optional batched ``fk_xyz`` ((m, n) rad -> (m, 3) m, e.g. ``PinocchioIK.fk_xyz_many``), carried
            in :attr:`box_braking` for planners that judge whole plans (the filter itself uses ``fk_xyz``).
    """

    def __init__(
        self,
        limits: JointLimits,
        margin_rad: float = 0.02,
        workspace: WorkspaceBox | None = None,
        fk_xyz: Callable[[np.ndarray], np.ndarray] | None = None,
        period_s: float = 0.002,
        log_interval_s: float = 1.0,
        workspace_margin_m: float = _BOX_MARGIN_M,
        event_history: int = 256,
        fk_xyz_many: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if margin_rad < 0 or np.any(limits.upper - limits.lower <= 2 * margin_rad):
            raise ConfigError(f"SafetyFilter: margin_rad={margin_rad} must be >= 0 and leave room inside every limit")
        if workspace is not None and fk_xyz is None:
            raise ConfigError("SafetyFilter: a workspace box needs fk_xyz (e.g. PinocchioIK.fk_xyz)")
        if not (math.isfinite(workspace_margin_m) and workspace_margin_m >= 0):
            raise ConfigError(f"SafetyFilter.workspace_margin_m: expected metres >= 0, got {workspace_margin_m}")
        if workspace is not None and np.any(workspace.upper - workspace.lower <= 2 * workspace_margin_m):
            raise ConfigError(
                f"SafetyFilter: workspace_margin_m={workspace_margin_m} m leaves no room inside the box; use a "
                "margin below half the box's smallest side"
            )
        self.workspace_margin_m = float(workspace_margin_m)
        self.limits = limits
        self.margin_rad = float(margin_rad)
        self.workspace = workspace
        self._fk_xyz = fk_xyz
        #: the stop model the box braking judges states by (None without a box); planners keep their plans within it
        self.box_braking: BoxBraking | None = None
        if workspace is not None and fk_xyz is not None:
            self.box_braking = BoxBraking(
                workspace,
                self.workspace_margin_m,
                limits.acceleration,
                limits.jerk,
                fk_xyz,
                BOX_BRAKE_FRACTION,
                fk_xyz_many,
            )
        self._lo = limits.lower + margin_rad
        self._hi = limits.upper - margin_rad
        self.log_interval_s = float(log_interval_s)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(INTERVENTION_KINDS, 0)
        self._total = 0
        self._calls = 0
        self._last_log = dict.fromkeys(INTERVENTION_KINDS, -math.inf)
        self._suppressed = dict.fromkeys(INTERVENTION_KINDS, 0)
        self._q: np.ndarray | None = None
        self._q_in: np.ndarray | None = None  # previous (position-clamped) input
        self._v_in: np.ndarray | None = None  # the command's own velocity / acceleration at the previous call
        self._a_in: np.ndarray | None = None
        self._catch_up = 0
        self._v = np.zeros(self.n)
        self._a = np.zeros(self.n)
        self._p: np.ndarray | None = None  # (3,) TCP of the previous output, m (workspace box only)
        #: the most recent interventions (fault events), oldest first; every one is also counted by kind
        self.events: deque[SafetyEvent] = deque(maxlen=event_history)
        self.set_period(period_s)

    @property
    def n(self) -> int:
        """Number of joints."""
        return int(self.limits.lower.shape[0])

    def set_period(self, period_s: float) -> None:
        """Set the nominal control period (s): the time step :meth:`filter` assumes when it is not told the real one."""
        if not (period_s > 0 and math.isfinite(period_s)):
            raise ConfigError(f"SafetyFilter.period_s: expected a positive number of seconds, got {period_s}")
        self.period_s = float(period_s)
        lim = self.limits
        self._vel, self._acc, self._jerk = lim.velocity, lim.acceleration, lim.jerk
        self._inv_two_jerk = 1.0 / (2.0 * lim.jerk)
        self._rooms = np.zeros((3, self.n))
        self._dt_hist = [self.period_s, self.period_s]  # the two time steps before the current one, s
        self._set_dt(self.period_s)

    def _set_dt(self, dt: float) -> None:
        """Constants that depend on the current time step ``dt`` (s)."""
        lim = self.limits
        self._dt = dt
        self._inv_dt = 1.0 / dt
        brake_acc = lim.acceleration * _BRAKE_FRACTION
        self._brake_adt = brake_acc * dt
        self._brake_adt_sq = self._brake_adt**2
        self._brake_8a = 8.0 * brake_acc
        self._box_ramp_s = float(np.max(2.0 * lim.acceleration / lim.jerk)) + dt  # BoxBraking.ramp_s(dt), s
        self._deadbeat_room = 0.05 * np.minimum(lim.acceleration * dt**2, lim.jerk * dt**3)

    def reset(self, q: np.ndarray, dq: np.ndarray | None = None) -> None:
        """Seed the previous-command state with measured joint positions (rad) and velocities (rad/s)."""
        with self._lock:
            self._reset(q, dq)

    def _reset(self, q: np.ndarray, dq: np.ndarray | None) -> None:
        q = self._validate(q, "reset q", count=False)
        self._q = q.copy()
        self._q_in = q.copy()
        self._v_in = None
        self._a_in = None
        self._v = np.zeros(self.n) if dq is None else self._validate(dq, "reset dq", count=False).copy()
        self._a = np.zeros(self.n)
        self._p = None
        self._dt_hist = [self.period_s, self.period_s]

    @property
    def previous(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(q rad, dq rad/s, ddq rad/s^2) of the last output, each (n,) float64 copies; None before the first."""
        with self._lock:
            if self._q is None:
                return None
            return self._q.copy(), self._v.copy(), self._a.copy()

    # ------------------------------------------------------------------------------------------ bookkeeping
    def _intervene(self, kind: str, detail: str) -> None:
        self._counts[kind] += 1
        self._total += 1
        self.events.append(SafetyEvent(time.monotonic_ns(), kind, detail))
        now = time.monotonic()
        if now - self._last_log[kind] >= self.log_interval_s:
            suppressed = self._suppressed[kind]
            extra = f" (+{suppressed} more since the last report)" if suppressed else ""
            log.warning("safety fault (%s intervention): %s%s", kind, detail, extra)
            self._last_log[kind] = now
            self._suppressed[kind] = 0
        else:
            self._suppressed[kind] += 1

    def _validate(self, q: np.ndarray, what: str, count: bool = True) -> np.ndarray:
        try:
            arr = np.asarray(q, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            if count:
                self._intervene("rejected_shape", f"{what} not numeric")
            raise SafetyError(f"{what}: not a numeric joint vector ({exc}); expected ({self.n},) rad") from exc
        if arr.shape != (self.n,):
            if count:
                self._intervene("rejected_shape", f"{what} shape {arr.shape}")
            raise SafetyError(
                f"{what}: expected shape ({self.n},) joint positions in rad, got {arr.shape}; command refused, "
                "the robot keeps its previous set-point"
            )
        if not math.isfinite(float(arr.sum())):
            if count:
                self._intervene("rejected_nonfinite", f"{what} has NaN/Inf")
            raise SafetyError(
                f"{what}: contains NaN/Inf ({arr.tolist()}); command refused, the robot keeps its previous "
                "set-point. Check the policy output / decoder."
            )
        return arr

    @property
    def interventions(self) -> int:
        """Interventions so far, all kinds (what ``stats()["total"]`` says, without building the dict)."""
        return self._total

    def stats(self) -> dict[str, int]:
        """Exact intervention counts by kind (see :data:`INTERVENTION_KINDS`), plus ``calls``, ``total`` (of the
        interventions) and ``catch_up_ticks`` (output changed only to close an earlier lag; not in ``total``)."""
        with self._lock:
            out = dict(self._counts)
            out["calls"] = self._calls
            out["total"] = sum(self._counts.values())
            out["catch_up_ticks"] = self._catch_up
            return out

    # ------------------------------------------------------------------------------------------------ filter
    def filter(self, q_cmd: np.ndarray, state: RobotState | None = None, dt_s: float | None = None) -> np.ndarray:
        """Return the safe (n,) float64 set-point (rad) for desired ``q_cmd`` ((n,) rad).

        ``state`` (the robot's measured state) seeds the previous-command state on the first call (or after
        :meth:`reset` was never called); later calls filter relative to the previous output. ``dt_s``: the real
        time (s) since the previous call (default: the nominal period). Velocity, acceleration and jerk are the
        scaled divided differences over the real times of the last two, three and four set-points (see
        :mod:`robot_stack.control.audit`), so a late or skipped tick is judged for the time that really passed,
        and samples of a plan within the limits pass unchanged however irregular the ticks. Raises
        :class:`SafetyError` for wrong shape or non-finite input, or a non-positive ``dt_s`` (counted; state
        unchanged).
        """
        with self._lock:
            self._calls += 1
            q_des = self._validate(q_cmd, "q_cmd")
            if self._q is None:
                if state is None:
                    raise SafetyError(
                        "SafetyFilter: no previous command and no robot state to start from; call reset(q) or "
                        "pass the measured RobotState"
                    )
                self._reset(state.q, state.dq)
            assert self._q is not None
            dt = self.period_s if dt_s is None else float(dt_s)
            if not (dt > 0.0 and math.isfinite(dt)):
                raise SafetyError(f"SafetyFilter.filter: dt_s must be a positive number of seconds, got {dt_s}")
            if dt != self._dt:
                self._set_dt(dt)
            inv_dt = self._inv_dt
            dt1, dt2 = self._dt_hist
            inv_h2 = 2.0 / (dt + dt1)  # acceleration: difference of velocities whose centres are (dt + dt1) / 2 apart
            h3 = (dt + dt1 + dt2) / 3.0  # jerk: difference of accelerations whose centres are this far apart
            inv_h3 = 1.0 / h3
            vel, acc, jrk = self._vel, self._acc, self._jerk
            q_prev, v_prev, a_prev = self._q, self._v, self._a

            total_before = sum(self._counts.values())
            # 1. position limits (tightened by the margin)
            q_pos = np.minimum(np.maximum(q_des, self._lo), self._hi)
            if np.abs(q_pos - q_des).max() > _EPS:
                j = int(np.argmax(np.abs(q_pos - q_des)))
                self._intervene("position", f"joint {j} {q_des[j]:.4f} rad clamped to {q_pos[j]:.4f}")

            # 2. velocity. A feasible command passes unchanged. When the command jumps (a step, or a tracking
            #    error built up by earlier clamping), approach it along the braking curve — the fastest speed
            #    from which the joint can still stop on it — instead of arriving at full speed and oscillating.
            v_des = (q_pos - q_prev) * inv_dt
            if self._q_in is None:
                v_t = np.zeros(self.n)
                v_own = None
            else:
                v_own = (q_pos - self._q_in) * inv_dt  # the command's own velocity (rad/s)
                v_t = v_own.copy()
                v_t[np.abs(v_t) > vel] = 0.0  # a jump: treat the target as static
            e = (v_des - v_t) * dt  # where the command is vs where following its velocity would put us
            rooms = self._rooms
            np.abs(e, out=rooms[0])
            np.maximum(self._hi - q_prev, 0.0, out=rooms[1])
            np.maximum(q_prev - self._lo, 0.0, out=rooms[2])
            brake = self._brake_speed(rooms)  # (3, n): toward the command, the upper and the lower limit
            # catch-up speed: the braking curve far away, a first-order approach (rate _CATCH_UP_HZ) close in; a
            # dead-beat close-in (e / dt) would ask for e / dt^2 of acceleration and chatter against the limits
            # (tiny lags, whose dead-beat closing needs a negligible acceleration and jerk, are closed in one tick)
            catch = np.minimum(brake[0], _CATCH_UP_HZ * rooms[0])
            v_ref = v_t + np.sign(e) * np.where(rooms[0] <= self._deadbeat_room, rooms[0] * inv_dt, catch)
            # approaching the velocity limit while accelerating: leave room to ramp the acceleration down at
            # the jerk limit (a^2 / 2j), so that the velocity cap does not force an acceleration step
            a_sq = a_prev * a_prev * self._inv_two_jerk
            v_hi = np.minimum(vel - np.where(a_prev > 0.0, a_sq, 0.0), brake[1])
            v_lo = -np.minimum(vel - np.where(a_prev < 0.0, a_sq, 0.0), brake[2])
            v = np.minimum(np.maximum(v_ref, v_lo), v_hi)
            # 2b. workspace box, anticipatory: cap the TCP speed toward each face so it can still stop on it
            if self.workspace is not None and self._fk_xyz is not None:
                v = self._box_velocity(q_prev, v_prev, a_prev, v, v_lo, v_hi)
            self._q_in = q_pos
            # interventions are judged on the command's own motion (see the module docstring); the first command
            # after a reset has none yet and is judged against the output state, as before
            v_cmd = v_des if v_own is None else v_own
            over = np.maximum(v_cmd - v_hi, v_lo - v_cmd)
            if over.max() * dt > _EPS:
                j = int(np.argmax(over))
                self._intervene("velocity", f"joint {j} commanded {v_cmd[j]:.3f} rad/s, limited to {v[j]:.3f}")
            a_cmd = None
            if v_own is not None and self._v_in is not None:
                a_cmd = (v_own - self._v_in) * inv_h2  # the command's own acceleration (rad/s^2)
                j_cmd = None if self._a_in is None else (a_cmd - self._a_in) * inv_h3
            self._v_in = v_own
            self._a_in = a_cmd

            # 3. acceleration
            a_des = (v - v_prev) * inv_h2
            a = np.minimum(np.maximum(a_des, -acc), acc)
            a_judged = a_des if a_cmd is None else a_cmd
            over_a = np.abs(a_judged) - acc
            if over_a.max() * dt * dt > _EPS and np.abs(a - a_des).max() * dt * dt > _EPS:
                j = int(np.argmax(over_a))
                self._intervene("acceleration", f"joint {j} commanded {a_judged[j]:.2f} rad/s^2, limit {acc[j]:.2f}")

            # 4. jerk
            j_des = (a - a_prev) * inv_h3
            jerk = np.minimum(np.maximum(j_des, -jrk), jrk)
            if np.abs(jerk - j_des).max() * dt**3 > _EPS:
                j_judged = j_des if a_cmd is None or j_cmd is None else j_cmd
                over_j = np.abs(j_judged) - jrk
                if over_j.max() * dt**3 > _EPS:
                    j = int(np.argmax(over_j))
                    self._intervene("jerk", f"joint {j} commanded {j_judged[j]:.1f} rad/s^3, limit {jrk[j]:.1f}")
                a = np.minimum(np.maximum(a_prev + jerk * h3, -acc), acc)
                v = np.minimum(np.maximum(v_prev + a * (0.5 * (dt + dt1)), -vel), vel)
            else:
                v = v_prev + a * (0.5 * (dt + dt1))
            q_out = np.minimum(np.maximum(q_prev + v * dt, self._lo), self._hi)
            untouched = sum(self._counts.values()) == total_before
            if untouched and np.abs(q_out - q_des).max() <= _ROUNDING:
                # a feasible command passes bit for bit (not re-integrated with rounding); only a rounding-sized
                # difference is replaced, since a replacement changes the output's velocity by difference / dt
                q_out = q_des.copy()
            if self.workspace is not None and self._fk_xyz is not None:
                self._p = self._fk_xyz(q_out)  # the TCP of this output: the next tick brakes from it

            if untouched and np.abs(q_out - q_des).max() > _EPS:
                self._catch_up += 1  # only closing an earlier lag: not an intervention
            v_out = (q_out - q_prev) * inv_dt
            self._a = (v_out - v_prev) * inv_h2
            self._dt_hist = [dt, dt1]
            self._q, self._v = q_out, v_out
            return q_out.copy()

    def _brake_speed(self, room: np.ndarray) -> np.ndarray:
        """Largest speed (rad/s) from which a discrete-time stop at the acceleration limit stays within ``room``.

        Moving at ``v`` for one tick and then decelerating by ``a * dt`` per tick covers ``v dt / 2 + v^2 / (2a)``;
        setting that equal to ``room`` gives ``v = (-a dt + sqrt((a dt)^2 + 8 a room)) / 2``. ``a`` is
        ``_BRAKE_FRACTION`` of the limit; the speed is also capped at ``room / dt`` (never step past the point).
        ``room``: (..., n) rad, >= 0.
        """
        speed = 0.5 * (np.sqrt(self._brake_adt_sq + self._brake_8a * room) - self._brake_adt)
        return np.minimum(speed, room * self._inv_dt)

    def _follow(self, q_prev: np.ndarray, v_prev: np.ndarray, a_prev: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The (n,) output (rad) stages 3-4 (acceleration, jerk, position) make of velocity ``v`` (uncounted)."""
        dt, acc = self._dt, self._acc
        a = np.minimum(np.maximum((v - v_prev) * self._inv_dt, -acc), acc)
        step = self._jerk * dt
        a = np.minimum(np.maximum(a, np.maximum(a_prev - step, -acc)), np.minimum(a_prev + step, acc))
        v_real = np.minimum(np.maximum(v_prev + a * dt, -self._vel), self._vel)
        return np.minimum(np.maximum(q_prev + v_real * dt, self._lo), self._hi)

    def _box_velocity(
        self,
        q_prev: np.ndarray,
        v_prev: np.ndarray,
        a_prev: np.ndarray,
        v: np.ndarray,
        v_lo: np.ndarray,
        v_hi: np.ndarray,
    ) -> np.ndarray:
        """The velocity reference (n,) rad/s closest to ``v`` after which the TCP can still stop inside the box.

        A candidate is judged by what the acceleration/jerk stages will really make of it (:meth:`_follow`) and
        by where a straight stop from there ends (:meth:`BoxBraking.stop_outside`). If ``v`` fails,
        bisect between it and the proportional braking reference (``v_prev`` slowed at
        :data:`BOX_BRAKE_FRACTION` of the limits, whose stop point stays put), so the box is held by braking
        early — the stages that follow still enforce every dynamic limit. A TCP already outside the shrunk box (in
        the margin band, or beyond the box) may only move so that its stop point gets no further out than the TCP
        is now.
        """
        braking = self.box_braking
        assert braking is not None and self._fk_xyz is not None
        if self._p is None:
            self._p = self._fk_xyz(q_prev)
        # measured like the stop point, per axis, against the box shrunk by the margin: a TCP inside the margin band
        # may move back inward (measured against the box itself, every motion from there, even away from the face,
        # would count as leaving it and be braked: the arm would freeze in the band, e.g. during a retreat); per
        # axis, so that getting back in on one axis never buys room to go out on another
        allowed = braking.outside(self._p) + 1e-9

        def outside(v_ref: np.ndarray) -> float:
            """How far (m) the stop point after ``v_ref`` is further out than allowed, worst axis (<= 0: fine)."""
            q_next = self._follow(q_prev, v_prev, a_prev, v_ref)
            stop = braking.stop_outside(q_next, (q_next - q_prev) * self._inv_dt, self._box_ramp_s)
            return float(np.max(stop - allowed))

        first = outside(v)
        if first <= 0.0:
            return v
        t_stop = float(np.max(np.abs(v_prev) / (self._acc * BOX_BRAKE_FRACTION)))
        slow = max(0.0, 1.0 - self._dt / t_stop) if t_stop > self._dt else 0.0
        v_brake = np.minimum(np.maximum(v_prev * slow, v_lo), v_hi)
        lo_s, hi_s = 0.0, 1.0  # fraction of the way from v_brake to v; lo_s is the best known
        for _ in range(10):
            mid = 0.5 * (lo_s + hi_s)
            if outside(v_brake + mid * (v - v_brake)) <= 0.0:
                lo_s = mid
            else:
                hi_s = mid
        self._intervene(
            "workspace",
            f"TCP {self._p.round(4).tolist()} m would stop {first * 1e3:.1f} mm further outside the box than "
            f"allowed; braking (fraction {lo_s:.3f} of the commanded velocity change kept)",
        )
        return v_brake + lo_s * (v - v_brake)
