"""Chunk scheduler: decoded action chunks -> one continuous joint trajectory for the executor.

Between the decoder and the :class:`~robot_stack.control.executor.Executor`. Every decoded chunk (a
:class:`~robot_stack.types.JointTrajectory` whose step ``k`` is meant for ``t_obs + k * dt``) arrives after the
inference latency; :meth:`ChunkScheduler.submit` then

1. **latency compensation** — drops the steps already in the past (``t_k < now``): they are never targets and
   do not shape the output (the C2 spline through the future steps is extrapolated over the less-than-one-step
   gap between ``now`` and the first future step); a chunk with no future step is refused (``stale``);
2. **blending** (``SchedulerConfig.mode``):

   * ``"splice"`` (real-time-chunking style, the default): the trajectory that is executing now is *kept* for
     an executing prefix ``[now, now + handover_s]`` (the time until the executor picks the new trajectory up),
     then the output moves from it to the new chunk over ``window_s`` with C2 weights (quintic smoothstep
     ``w = 10 s^3 - 15 s^4 + 6 s^5``): ``q(t) = (1 - w) q_old(t) + w q_new(t)``. Position, velocity and
     acceleration are continuous, so the jerk of the transition scales with ``|q_new - q_old| / window_s^3``;
   * ``"ensemble"`` (ACT-style temporal ensembling): the target is the weighted mean of every live chunk at each
     time, weights ``exp(-m * i)`` with ``i = 0`` for the oldest chunk (``m = ensemble_m``; ACT's convention:
     larger ``m`` favours older chunks, negative favours newer). Each chunk's weight fades out (C2) over the last
     ``taper_s`` of its span so that a chunk ending does not make the mean jump; the target is then entered
     through the same splice, so the executing prefix is kept as well;
   * ``"none"``: latency compensation only; the executor's own blend handles the switch.

3. **extension** (``extend_s`` > 0): after the newest chunk's last step the output does not end; it continues
   along the chunk's own motion and comes to rest over ``extend_s``. Position, velocity and acceleration are
   continuous at the last step (velocity follows a cubic Hermite from the chunk's end velocity/acceleration to
   zero) unless the chunk ends too fast for a stop within ``limit_fraction`` of the acceleration limits in that
   time: then the extension starts from a capped velocity/acceleration (bounded travel). A next chunk that is
   late — arrives after the last step but within the extension — is spliced in from the extension, so the arm
   never runs out of trajectory and never stops abruptly; if none arrives, the arm is at rest when the extension
   ends. The executor is told where the policy's own steps end (``policy_end_ns``), so its watchdog still counts
   from there: an extension never delays a safe hold;
4. resamples the result on a fixed grid (``resample_dt_s``, aligned to absolute multiples of it so consecutive
   outputs share knots) and hands it to :meth:`Executor.set_trajectory`. Chunk steps are interpolated with a C2
   cubic spline (scipy ``CubicSpline``) before resampling.

**Composition with the executor's blend.** The executor blends from the old trajectory's desired state into
every new trajectory (quintic over ``Executor.blend_s``). The scheduler's output reproduces the executing
trajectory *exactly* on the prefix (same knots and values before the splice), so the executor's blend starts from
a zero offset and does nothing: the two layers do not double-blend. The executor's blend still acts when there
is nothing to splice from (first chunk, after a watchdog hold, after a rejected hand-over), where it enters the
new chunk from the commanded state.

Times are monotonic ns (int); positions rad; arrays (n,) / (N, n) float64.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline

from robot_stack.clock import Clock
from robot_stack.control.executor import Executor, ExecutorState
from robot_stack.errors import ConfigError, ShapeError
from robot_stack.types import JointTrajectory

log = logging.getLogger("robot_stack.control.scheduler")

__all__ = ["BlendMode", "ChunkScheduler", "ScheduleResult", "SchedulerConfig", "extension_offset", "smoothstep5"]


class BlendMode(str, enum.Enum):
    """How consecutive chunks are joined (see the module docstring)."""

    SPLICE = "splice"
    ENSEMBLE = "ensemble"
    NONE = "none"


@dataclass(frozen=True)
class SchedulerConfig:
    """Settings of :class:`ChunkScheduler` (one place for defaults).

    Attributes:
        mode: ``"splice"``, ``"ensemble"`` or ``"none"`` (:class:`BlendMode`).
        handover_s: executing prefix kept after ``now``: at least the time until the executor picks the new
            trajectory up (one control period) plus scheduling jitter, seconds.
        window_s: duration of the transition from the executing trajectory to the new target, seconds.
        resample_dt_s: knot spacing of the trajectories handed to the executor, seconds.
        ensemble_m: ACT's exponential weight ``exp(-m * i)`` (``i = 0`` the oldest chunk), per chunk.
        taper_s: in ensemble mode, older chunks fade out over their last ``taper_s`` seconds.
        max_chunks: at most this many chunks take part in the ensemble (the newest ones).
        limit_fraction: the transition is stretched beyond ``window_s`` (while the executing trajectory lasts)
            until its own peak acceleration and jerk (``5.77 d / T^2``, ``60 d / T^3`` for a mismatch ``d``)
            stay within this fraction of every joint's limits; the extension's deceleration (and its start
            velocity, against the velocity limits) likewise.
        extend_s: after the newest chunk's last step, come to rest along its motion over this long (seconds;
            0 = the output ends at the last step and the executor decelerates on its own). Keep it below the
            executor's watchdog timeout.
    """

    mode: str = "splice"
    handover_s: float = 0.02
    window_s: float = 0.2
    resample_dt_s: float = 0.004
    ensemble_m: float = 0.1
    taper_s: float = 0.3
    max_chunks: int = 8
    limit_fraction: float = 0.5
    extend_s: float = 0.25

    def __post_init__(self) -> None:
        try:
            BlendMode(self.mode)
        except ValueError:
            raise ConfigError(
                f"SchedulerConfig.mode: {self.mode!r} unknown; expected one of {[m.value for m in BlendMode]}"
            ) from None
        for name in ("handover_s", "window_s", "resample_dt_s", "taper_s", "extend_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value >= 0):
                raise ConfigError(f"SchedulerConfig.{name}: expected seconds >= 0, got {value!r}")
        if self.resample_dt_s <= 0 or self.window_s <= 0:
            raise ConfigError("SchedulerConfig: resample_dt_s and window_s must be > 0 seconds")
        if not 0 < self.limit_fraction <= 1:
            raise ConfigError(f"SchedulerConfig.limit_fraction: expected (0, 1], got {self.limit_fraction}")
        if not np.isfinite(self.ensemble_m) or self.max_chunks < 1:
            raise ConfigError("SchedulerConfig: ensemble_m must be finite and max_chunks >= 1")


@dataclass(frozen=True)
class ScheduleResult:
    """What :meth:`ChunkScheduler.submit` did with one chunk.

    Attributes:
        accepted: the executor took the output trajectory.
        reason: ``"ok"``, ``"stale"`` (no step in the future) or ``"rejected"`` (the executor refused it).
        mode: the blending actually applied: ``"splice"``, ``"ensemble"``, ``"none"``, or ``"fresh"`` (nothing
            was executing, so there was nothing to splice from).
        skipped_steps: chunk steps that were already in the past at ``now``.
        trajectory: the trajectory handed to the executor (None when stale).
        now_ns: the time the chunk was scheduled at.
    """

    accepted: bool
    reason: str
    mode: str
    skipped_steps: int
    trajectory: JointTrajectory | None
    now_ns: int


def smoothstep5(s: np.ndarray) -> np.ndarray:
    """C2 ramp from 0 (s <= 0) to 1 (s >= 1): ``10 s^3 - 15 s^4 + 6 s^5``, zero 1st/2nd derivative at both ends."""
    s = np.clip(s, 0.0, 1.0)
    return s * s * s * (10.0 + s * (-15.0 + 6.0 * s))


@dataclass(frozen=True)
class _Chunk:
    """A chunk as the scheduler keeps it: C2 spline through its future steps (abscissa: seconds from t0_ns)."""

    t_end_ns: int  # last step
    spline: CubicSpline | None  # None for a single-knot chunk
    q_single: np.ndarray | None
    t0_ns: int  # time origin of the spline's abscissa
    gripper_t: np.ndarray | None  # (M,) seconds from t0 for the gripper interpolation
    gripper: np.ndarray | None
    tail_s: float = 0.0  # extension after the last step (s); 0 = held
    v_end: np.ndarray | None = None  # (n,) rad/s, rad/s^2 of the spline at the last step
    a_end: np.ndarray | None = None

    @property
    def end_ns(self) -> int:
        """Where the chunk's positions stop changing: the last step plus the extension."""
        return self.t_end_ns + round(self.tail_s * 1e9)

    def positions(self, t_ns: np.ndarray) -> np.ndarray:
        """(len(t), n) positions; extrapolated before the first step (at most one step, see ``_to_chunk``), then
        the extension after the last (see :func:`extension_offset`), held after that."""
        if self.spline is None:
            assert self.q_single is not None
            return np.broadcast_to(self.q_single, (len(t_ns), self.q_single.shape[0])).copy()
        ts = (np.minimum(t_ns, self.t_end_ns) - self.t0_ns) * 1e-9
        out = np.asarray(self.spline(ts))
        if self.tail_s > 0.0 and self.v_end is not None and self.a_end is not None:
            after = t_ns > self.t_end_ns
            if np.any(after):
                tau = (t_ns[after] - self.t_end_ns) * 1e-9
                out[after] += extension_offset(self.v_end, self.a_end, self.tail_s, tau)
        return out

    def gripper_at(self, t_ns: np.ndarray) -> np.ndarray | None:
        if self.gripper is None or self.gripper_t is None:
            return None
        return np.interp((t_ns - self.t0_ns) * 1e-9, self.gripper_t, self.gripper)


def extension_offset(v_end: np.ndarray, a_end: np.ndarray, duration_s: float, tau_s: np.ndarray) -> np.ndarray:
    """Displacement (len(tau), n) rad of a C2 come-to-rest that starts with velocity ``v_end`` ((n,) rad/s) and
    acceleration ``a_end`` ((n,) rad/s^2) and ends at rest after ``duration_s``; ``tau_s`` seconds after the start
    (clipped to ``[0, duration_s]``: held after).

    The velocity is the cubic Hermite ``v(s) = v_end h00(s) + a_end T h10(s)``, ``s = tau / T``; integrated:
    ``T [v_end (s^4/2 - s^3 + s) + a_end T (s^4/4 - 2 s^3/3 + s^2/2)]``. Peak deceleration
    ``<= 1.5 |v_end| / T + |a_end|``.
    """
    T = float(duration_s)
    s = np.clip(np.asarray(tau_s, dtype=np.float64) / T, 0.0, 1.0)[:, None]
    s2 = s * s
    p_v = s2 * s2 * 0.5 - s2 * s + s
    p_a = s2 * s2 * 0.25 - s2 * s * (2.0 / 3.0) + s2 * 0.5
    return T * (p_v * v_end[None, :] + p_a * (a_end * T)[None, :])


class ChunkScheduler:
    """Latency compensation and chunk blending in front of an :class:`Executor` (thread-safe).

    Args:
        executor: where the joined trajectories go (``set_trajectory``); its clock is used for ``now``.
        config: settings (default :class:`SchedulerConfig`).
        clock: time source for ``now`` (default ``executor.clock``).
    """

    def __init__(self, executor: Executor, config: SchedulerConfig | None = None, clock: Clock | None = None) -> None:
        self.executor = executor
        self.config = config or SchedulerConfig()
        self.mode = BlendMode(self.config.mode)
        self.clock: Clock = clock or executor.clock
        self._res_ns = round(self.config.resample_dt_s * 1e9)
        self._lock = threading.Lock()
        self._active: JointTrajectory | None = None
        self._chunks: list[_Chunk] = []
        self._counts = {"submitted": 0, "accepted": 0, "stale": 0, "rejected": 0, "fresh": 0, "steps_skipped": 0}

    # ------------------------------------------------------------------------------------------ queries
    @property
    def active(self) -> JointTrajectory | None:
        """The last trajectory the executor accepted from this scheduler."""
        return self._active

    def stats(self) -> dict[str, Any]:
        """Counters: submitted, accepted, stale, rejected, fresh (no splice source), steps_skipped."""
        with self._lock:
            return {"mode": self.mode.value, **self._counts}

    def reset(self) -> None:
        """Forget the executing trajectory and the ensemble (e.g. after the robot was moved by hand)."""
        with self._lock:
            self._active = None
            self._chunks.clear()

    # ------------------------------------------------------------------------------------------ helpers
    def _to_chunk(self, traj: JointTrajectory, now_ns: int) -> tuple[_Chunk | None, int]:
        """Keep only the future steps (``t_k >= now``); return (chunk, number of skipped past steps)."""
        t = np.asarray(traj.t_ns, dtype=np.int64)
        future = np.flatnonzero(t >= now_ns)
        skipped = int(len(t) - len(future))
        if len(future) == 0:
            return None, skipped
        tk = t[future]
        qk = np.asarray(traj.positions, dtype=np.float64)[future]
        t0 = int(tk[0])
        grip_t = None if traj.gripper is None else (tk - t0) * 1e-9
        grip = None if traj.gripper is None else np.asarray(traj.gripper, dtype=np.float64)[future]
        if len(tk) == 1:
            return _Chunk(int(tk[-1]), None, qk[0].copy(), t0, grip_t, grip), skipped
        # C2 interpolation ("not-a-knot" reproduces cubics); before the first future step (less than one step,
        # between now and that step) the spline is extrapolated from the future steps, never from past ones
        bc = "not-a-knot" if len(tk) >= 4 else "natural"
        spline = CubicSpline((tk - t0) * 1e-9, qk, axis=0, bc_type=bc, extrapolate=True)
        if self.config.extend_s <= 0.0:
            return _Chunk(int(tk[-1]), spline, None, t0, grip_t, grip), skipped
        t_last = (int(tk[-1]) - t0) * 1e-9
        v_end, a_end = np.asarray(spline(t_last, 1)), np.asarray(spline(t_last, 2))
        # the come-to-rest's peak deceleration (<= 1.5 |v| / T + |a|) must fit limit_fraction of the acceleration
        # limits: a chunk that ends fast or wild (a jumping policy) is extended from a capped velocity and
        # acceleration, so an extension never travels more than a few centiradians (the output then bends into
        # the extension; the safety filter smooths that within the limits)
        lim = self.executor.robot.limits
        tail_s = self.config.extend_s
        budget = self.config.limit_fraction * np.asarray(lim.acceleration)
        a_c = np.clip(a_end, -0.5 * budget, 0.5 * budget)
        v_cap = np.minimum((budget - np.abs(a_c)) * tail_s / 1.5, self.config.limit_fraction * np.asarray(lim.velocity))
        v_c = np.clip(v_end, -v_cap, v_cap)
        return _Chunk(int(tk[-1]), spline, None, t0, grip_t, grip, tail_s, v_c, a_c), skipped

    def _grid(self, now_ns: int, end_ns: int) -> np.ndarray:
        """Absolute-aligned knots from two before ``now`` to the last one not after ``end_ns`` (at least 3)."""
        res = self._res_ns
        g_now = (now_ns // res) * res  # last knot <= now
        first = g_now - res
        last = max((end_ns // res) * res, g_now + res)
        return np.arange(first, last + 1, res, dtype=np.int64)

    def _active_covering(self, now_ns: int) -> JointTrajectory | None:
        active = self._active
        if active is None or self.executor.state != ExecutorState.TRACKING:
            return None
        if int(active.t_ns[-1]) < now_ns + round(self.config.handover_s * 1e9):
            return None
        return active

    @staticmethod
    def _lookup(traj: JointTrajectory, t_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Values of the executing output at knots ``t_ns`` (exact at its own knots, linear elsewhere, held after
        its end)."""
        tt = np.asarray(traj.t_ns, dtype=np.int64)
        pos = np.asarray(traj.positions)
        idx = np.searchsorted(tt, t_ns)
        exact = (idx < len(tt)) & (tt[np.minimum(idx, len(tt) - 1)] == t_ns)
        out = np.empty((len(t_ns), pos.shape[1]))
        out[exact] = pos[idx[exact]]
        if not np.all(exact):
            rest = ~exact
            x = (t_ns[rest] - tt[0]) * 1e-9
            xp = (tt - tt[0]) * 1e-9
            out[rest] = np.stack([np.interp(x, xp, pos[:, j]) for j in range(pos.shape[1])], axis=1)
        grip = None
        if traj.gripper is not None:
            grip = np.interp((t_ns - tt[0]) * 1e-9, (tt - tt[0]) * 1e-9, np.asarray(traj.gripper))
        return out, grip

    def _ensemble(self, t_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """ACT-style weighted mean of the live chunks at ``t_ns``; the newest chunk never fades out."""
        cfg = self.config
        chunks = self._chunks
        n = len(chunks)
        num = np.zeros((len(t_ns), chunks[-1].positions(t_ns[:1]).shape[1]))
        den = np.zeros(len(t_ns))
        gnum, gden = np.zeros(len(t_ns)), np.zeros(len(t_ns))
        taper_ns = max(round(cfg.taper_s * 1e9), 1)
        for i, c in enumerate(chunks):
            w = np.full(len(t_ns), np.exp(-cfg.ensemble_m * i))
            if i < n - 1:
                w *= smoothstep5((c.t_end_ns - t_ns) / taper_ns)
            num += w[:, None] * c.positions(t_ns)
            den += w
            g = c.gripper_at(t_ns)
            if g is not None:
                gnum += w * g
                gden += w
        newest = chunks[-1].positions(t_ns)
        pos = np.where(den[:, None] > 1e-12, num / np.maximum(den, 1e-12)[:, None], newest)
        grip = None
        if np.any(gden > 0):
            g_new = chunks[-1].gripper_at(t_ns)
            fallback = g_new if g_new is not None else gnum / np.maximum(gden, 1e-12)
            grip = np.where(gden > 1e-12, gnum / np.maximum(gden, 1e-12), fallback)
        return pos, grip

    def _window(self, mismatch: np.ndarray, available_s: float) -> float:
        """Transition duration (s): ``window_s``, stretched so that a quintic transition over the largest
        per-joint mismatch (rad) stays within ``limit_fraction`` of the acceleration and jerk limits, and
        capped at ``available_s`` (the executing trajectory's remaining span)."""
        cfg = self.config
        if mismatch.size == 0:
            return max(min(cfg.window_s, available_s), cfg.resample_dt_s)
        d = mismatch.max(axis=0)
        lim = self.executor.robot.limits
        f = cfg.limit_fraction
        need = max(
            cfg.window_s,
            float(np.max(np.sqrt(5.774 * d / (f * lim.acceleration)))),
            float(np.max(np.cbrt(60.0 * d / (f * lim.jerk)))),
        )
        return max(min(need, available_s), self.config.resample_dt_s)

    # ------------------------------------------------------------------------------------------- submit
    def submit(self, traj: JointTrajectory, now_ns: int | None = None) -> ScheduleResult:
        """Schedule one decoded chunk at ``now_ns`` (default: the clock's now) and hand it to the executor.

        Raises:
            ShapeError: ``traj`` is not a JointTrajectory or its joints are not the executor's.
        """
        if not isinstance(traj, JointTrajectory):
            raise ShapeError(f"ChunkScheduler.submit: expected a JointTrajectory, got {type(traj).__name__}")
        robot_joints = tuple(self.executor.robot.joint_names)
        if tuple(traj.joint_names) != robot_joints:
            raise ShapeError(
                f"ChunkScheduler.submit: trajectory joints {traj.joint_names} are not the robot's {robot_joints}"
            )
        with self._lock:
            now = int(self.clock.now_ns() if now_ns is None else now_ns)
            self._counts["submitted"] += 1
            chunk, skipped = self._to_chunk(traj, now)
            self._counts["steps_skipped"] += skipped
            if chunk is None:
                self._counts["stale"] += 1
                log.warning(
                    "chunk stale: all %d steps are in the past (last %.1f ms ago); latency exceeds the horizon",
                    len(traj),
                    (now - int(traj.t_ns[-1])) / 1e6,
                )
                return ScheduleResult(False, "stale", self.mode.value, skipped, None, now)

            # the ensemble keeps the newest chunks that still reach into the future
            self._chunks = [c for c in self._chunks if c.end_ns > now][-(self.config.max_chunks - 1) :]
            if self.config.max_chunks == 1:
                self._chunks = []
            self._chunks.append(chunk)

            grid = self._grid(now, chunk.end_ns)
            if self.mode == BlendMode.ENSEMBLE:
                target, target_grip = self._ensemble(grid)
            else:
                target, target_grip = chunk.positions(grid), chunk.gripper_at(grid)
            old = self._active_covering(now) if self.mode != BlendMode.NONE else None
            if old is None:
                positions, gripper = target, target_grip
                used = "fresh" if self.mode != BlendMode.NONE else "none"
            else:
                freeze = now + round(self.config.handover_s * 1e9)
                q_old, g_old = self._lookup(old, grid)
                # the transition must be over before the executing trajectory ends (after its end it is held,
                # and a held term inside the blend would put a velocity kink into the output)
                end = min(int(grid[-1]), int(old.t_ns[-1]))
                span = (grid >= freeze) & (grid <= end)
                window_s = self._window(np.abs(target - q_old)[span], max(end - freeze, 0) * 1e-9)
                w = smoothstep5((grid - freeze) / (window_s * 1e9))[:, None]
                positions = (1.0 - w) * q_old + w * target
                if g_old is not None and target_grip is not None:
                    gripper = (1.0 - w[:, 0]) * g_old + w[:, 0] * target_grip
                else:
                    gripper = target_grip if target_grip is not None else g_old
                used = self.mode.value
            out = JointTrajectory(
                traj.joint_names, grid, positions, None if gripper is None else np.clip(gripper, 0, 1)
            )
            if chunk.tail_s > 0.0 and isinstance(self.executor, Executor):
                # the executor's watchdog counts from the policy's last step, not from the extension's end
                accepted = self.executor.set_trajectory(out, policy_end_ns=chunk.t_end_ns)
            else:
                accepted = self.executor.set_trajectory(out)
            if accepted:
                self._active = out
                self._counts["accepted"] += 1
                if used == "fresh":
                    self._counts["fresh"] += 1
                return ScheduleResult(True, "ok", used, skipped, out, now)
            self._counts["rejected"] += 1
            return ScheduleResult(False, "rejected", used, skipped, out, now)
