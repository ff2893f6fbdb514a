"""Chunk scheduler: decoded action chunks -> one continuous motion plan for the executor, within the limits.

Between the decoder and the :class:`~robot_stack.control.executor.Executor`. Every decoded chunk (a
:class:`~robot_stack.types.JointTrajectory` whose step ``k`` is meant for ``t_obs + k * dt``) arrives after the
inference latency; :meth:`ChunkScheduler.submit` then

1. **latency compensation** — drops the steps already in the past (``t_k < now``): they are never targets and do
   not shape the output; a chunk with no future step is refused (``stale``);
2. **timing** — the future steps are timed within the chunk limits (:func:`~robot_stack.control.timing.time_chunk`:
   the policy's own timing where feasible, TOPP-RA where it asks for more than the arm can do);
3. **the target** (``SchedulerConfig.mode``):

   * ``"splice"`` (real-time-chunking style, the default) and ``"none"``: the newest chunk;
   * ``"ensemble"`` (ACT-style temporal ensembling): the weighted mean of every live chunk at each time, weights
     ``exp(-m * i)`` with ``i = 0`` for the oldest chunk (``m = ensemble_m``; ACT's convention: larger ``m``
     favours older chunks, negative favours newer); each older chunk's weight fades out (C2) over the last
     ``taper_s`` of its span. The mean is taken on a grid of ``ensemble_dt_s`` and timed again like a chunk;

   the target is then **extended**: after its last step it comes to rest along its motion (a ruckig stop at the
   extension limits taking at least ``extend_s``), so a late next chunk finds the arm still moving and is joined
   from there, and an arm whose policy went silent stops smoothly. The executor is told where the policy's own
   steps end (``policy_end_ns``), so its watchdog still counts from there;
4. **the hand-over** — in ``"splice"`` and ``"ensemble"`` modes the trajectory executing now is *kept* for an
   executing prefix ``[now, now + handover_s]`` (the time until the executor picks the new plan up), and a ruckig
   transition from its state at the end of the prefix (position, velocity, acceleration) joins the target where
   the limits allow (:meth:`~robot_stack.control.online.OnlineGenerator.join`: its duration follows from the
   mismatch and the limits, there is no fixed window and no cap). The executor finds the new plan continuing
   exactly what it commands and adopts it. In ``"none"`` mode (and when nothing is executing: ``"fresh"``) the
   target goes to the executor as it is and the executor joins it from its commanded state at the tick it picks it
   up — the same ruckig transition, made one layer down (the real-time process's
   :class:`~robot_stack.control.rt_process.ProcessExecutor` makes it in the main process, from the loop's plan at a
   hand-over time just ahead, so that the loop only adopts it).

Every plan handed over is within the limits by construction; the safety filter after the executor only watches.
Times are monotonic ns (int); positions rad.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from robot_stack.clock import Clock
from robot_stack.control.executor import ExecutorState
from robot_stack.control.motion import MotionConfig, MotionPlanner
from robot_stack.control.plan import JointState, MotionPlan
from robot_stack.control.timing import preload
from robot_stack.errors import ConfigError, MotionError, ShapeError
from robot_stack.robots.base import JointLimits
from robot_stack.types import JointTrajectory

log = logging.getLogger("robot_stack.control.scheduler")

__all__ = ["BlendMode", "ChunkScheduler", "PlanSink", "ScheduleResult", "SchedulerConfig", "smoothstep5"]


class BlendMode(str, enum.Enum):
    """How consecutive chunks are joined (see the module docstring)."""

    SPLICE = "splice"
    ENSEMBLE = "ensemble"
    NONE = "none"


class PlanSink(Protocol):
    """What the scheduler hands plans to: :class:`~robot_stack.control.executor.Executor` or
    :class:`~robot_stack.control.rt_process.ProcessExecutor`."""

    clock: Clock
    motion_config: MotionConfig

    @property
    def state(self) -> ExecutorState: ...

    @property
    def joint_names(self) -> tuple[str, ...]: ...

    @property
    def limits(self) -> JointLimits: ...

    @property
    def active_plan(self) -> MotionPlan | None: ...

    def set_plan(self, plan: MotionPlan) -> bool: ...


@dataclass(frozen=True)
class SchedulerConfig:
    """Settings of :class:`ChunkScheduler` (one place for defaults).

    Attributes:
        mode: ``"splice"``, ``"ensemble"`` or ``"none"`` (:class:`BlendMode`).
        handover_s: executing prefix kept after the plan is made: at least the time until the executor picks the
            new plan up (one control period) plus scheduling jitter, seconds. The scheduler adds the time its own
            joins and hand-overs recently took (measured), so a loaded host lengthens the prefix instead of handing
            over plans the executor can no longer adopt.
        ensemble_m: ACT's exponential weight ``exp(-m * i)`` (``i = 0`` the oldest chunk), per chunk.
        taper_s: in ensemble mode, older chunks fade out over their last ``taper_s`` seconds.
        max_chunks: at most this many chunks take part in the ensemble (the newest ones).
        ensemble_dt_s: spacing of the ensemble target's waypoints, seconds.
        extend_s: the come-to-rest after the newest chunk's last step takes at least this long (seconds; None:
            ``MotionConfig.extend_min_s``; its deceleration is ``MotionConfig.extension_fraction`` of the limits).
            Keep it below the executor's watchdog timeout.
        resample_dt_s: spacing of :attr:`ScheduleResult.trajectory`, the waypoint view of each plan (reports and
            plots; the executor follows the exact plan).
        motion: fractions of the limits to plan with (None: the executor's).
    """

    mode: str = "splice"
    handover_s: float = 0.02
    ensemble_m: float = 0.1
    taper_s: float = 0.3
    max_chunks: int = 8
    ensemble_dt_s: float = 0.02
    extend_s: float | None = None
    resample_dt_s: float = 0.004
    motion: MotionConfig | None = None

    def __post_init__(self) -> None:
        try:
            BlendMode(self.mode)
        except ValueError:
            raise ConfigError(
                f"SchedulerConfig.mode: {self.mode!r} unknown; expected one of {[m.value for m in BlendMode]}"
            ) from None
        for name in ("handover_s", "taper_s", "ensemble_dt_s", "resample_dt_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value >= 0):
                raise ConfigError(f"SchedulerConfig.{name}: expected seconds >= 0, got {value!r}")
        if self.resample_dt_s <= 0 or self.ensemble_dt_s <= 0:
            raise ConfigError("SchedulerConfig: resample_dt_s and ensemble_dt_s must be > 0 seconds")
        if self.extend_s is not None and not (np.isfinite(self.extend_s) and self.extend_s >= 0):
            raise ConfigError(f"SchedulerConfig.extend_s: expected seconds >= 0 or None, got {self.extend_s!r}")
        if not np.isfinite(self.ensemble_m) or self.max_chunks < 1:
            raise ConfigError("SchedulerConfig: ensemble_m must be finite and max_chunks >= 1")


@dataclass(frozen=True)
class ScheduleResult:
    """What :meth:`ChunkScheduler.submit` did with one chunk.

    Attributes:
        accepted: the executor took the output plan.
        reason: ``"ok"``, ``"stale"`` (no step in the future), ``"motion"`` (no plan within the limits) or
            ``"rejected"`` (the executor refused it).
        mode: the hand-over actually applied: ``"splice"``, ``"ensemble"``, ``"none"``, or ``"fresh"`` (nothing
            was executing, so the executor joins the target from its commanded state).
        skipped_steps: chunk steps that were already in the past at ``now``.
        plan: the plan handed to the executor (None when stale).
        trajectory: the plan as waypoints every ``resample_dt_s`` (None when stale).
        now_ns: the time the chunk was scheduled at.
        timing: how the chunk was timed: ``"nominal"``, ``"toppra"``, ``"stretch"`` or ``"point"`` (empty when stale).
        slowdown: how much longer than the policy's timing the chunk takes after timing (1.0 = as asked).
    """

    accepted: bool
    reason: str
    mode: str
    skipped_steps: int
    plan: MotionPlan | None
    trajectory: JointTrajectory | None
    now_ns: int
    timing: str = ""
    slowdown: float = 1.0


def smoothstep5(s: np.ndarray) -> np.ndarray:
    """C2 ramp from 0 (s <= 0) to 1 (s >= 1): ``10 s^3 - 15 s^4 + 6 s^5``, zero 1st/2nd derivative at both ends."""
    s = np.clip(s, 0.0, 1.0)
    return s * s * s * (10.0 + s * (-15.0 + 6.0 * s))


class ChunkScheduler:
    """Latency compensation, chunk timing and hand-over in front of an executor (thread-safe).

    Args:
        executor: where the plans go (``set_plan``); its clock is used for ``now``.
        config: settings (default :class:`SchedulerConfig`).
        clock: time source for ``now`` (default ``executor.clock``).
    """

    def __init__(self, executor: PlanSink, config: SchedulerConfig | None = None, clock: Clock | None = None) -> None:
        self.executor = executor
        self.config = cfg = config or SchedulerConfig()
        self.mode = BlendMode(cfg.mode)
        self.clock: Clock = clock or executor.clock
        motion = cfg.motion or executor.motion_config
        if cfg.extend_s is not None:
            motion = dataclasses.replace(motion, extend_min_s=cfg.extend_s)
        # the executor's workspace-box model (``box_guard``, when its safety filter has a box): chunks and their
        # extensions are planned within it, so that the filter never brakes them
        self.planner = MotionPlanner(
            executor.joint_names, executor.limits, motion, getattr(executor, "box_guard", None)
        )
        preload()  # the first re-timed chunk must not stall a control thread in this process on an import
        self._res_ns = round(cfg.resample_dt_s * 1e9)
        self._lock = threading.Lock()
        self._active: MotionPlan | None = None
        self._chunks: list[MotionPlan] = []  # timed chunks (ensemble), oldest first
        self._handover_est_s = 0.0  # recent time from planning the hand-over to handing it over (s)
        self._counts = {
            "submitted": 0,
            "accepted": 0,
            "stale": 0,
            "rejected": 0,
            "motion": 0,
            "fresh": 0,
            "steps_skipped": 0,
            "retimed": 0,
            "moves": 0,
        }

    # ------------------------------------------------------------------------------------------ queries
    @property
    def active(self) -> MotionPlan | None:
        """The last plan the executor accepted from this scheduler."""
        return self._active

    def stats(self) -> dict[str, Any]:
        """Counters: submitted, accepted, stale, rejected, motion (no plan within the limits), fresh (no splice
        source), steps_skipped, retimed (chunks TOPP-RA had to slow down), moves (:meth:`move_to` hand-overs)."""
        with self._lock:
            return {"mode": self.mode.value, **self._counts}

    def reset(self) -> None:
        """Forget the executing plan and the ensemble (e.g. after the robot was moved by hand)."""
        with self._lock:
            self._active = None
            self._chunks.clear()

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _future(traj: JointTrajectory, now_ns: int) -> tuple[JointTrajectory | None, int]:
        """Only the future steps (``t_k >= now``); return (trajectory, number of skipped past steps)."""
        t = np.asarray(traj.t_ns, dtype=np.int64)
        future = np.flatnonzero(t >= now_ns)
        skipped = int(len(t) - len(future))
        if len(future) == 0:
            return None, skipped
        grip = None if traj.gripper is None else np.asarray(traj.gripper)[future]
        return JointTrajectory(traj.joint_names, t[future], np.asarray(traj.positions)[future], grip), skipped

    def _active_covering(self, freeze_ns: int) -> MotionPlan | None:
        """The plan the executor is following (it may have joined or stopped on its own), if it is tracking one
        that lasts beyond ``freeze_ns``."""
        if self.executor.state != ExecutorState.TRACKING:
            return None
        active = self.executor.active_plan
        if active is None:
            return None
        if active.end_ns <= freeze_ns:
            return None
        return active

    def _ensemble_target(self, newest: MotionPlan, now_ns: int) -> JointTrajectory:
        """ACT-style weighted mean of the live timed chunks, as waypoints over the newest chunk's span."""
        cfg = self.config
        start, end = newest.start_ns, newest.policy_end_ns or newest.end_ns
        step = round(cfg.ensemble_dt_s * 1e9)
        t = np.arange(start, end, step, dtype=np.int64)
        t = np.append(t, end) if len(t) == 0 or t[-1] < end else t
        if len(t) >= 2 and t[-1] - t[-2] < step // 4:  # no sliver step at the end
            t = np.delete(t, -2)
        chunks = self._chunks
        n = len(chunks)
        num = np.zeros((len(t), newest.n))
        den = np.zeros(len(t))
        taper_ns = max(round(cfg.taper_s * 1e9), 1)
        for i, c in enumerate(chunks):
            w = np.full(len(t), np.exp(-cfg.ensemble_m * i))
            if i < n - 1:
                c_end = c.policy_end_ns or c.end_ns
                w *= smoothstep5((c_end - t) / taper_ns)
                w[t < c.start_ns] = 0.0
            q, _, _ = c.sample_many(t)
            num += w[:, None] * q
            den += w
        q_new, _, _ = newest.sample_many(t)
        pos = np.where(den[:, None] > 1e-12, num / np.maximum(den, 1e-12)[:, None], q_new)
        return JointTrajectory(newest.joint_names, t, pos, newest.gripper_many(t))

    def _waypoints(self, plan: MotionPlan) -> JointTrajectory:
        res = self._res_ns
        t = np.arange(plan.start_ns, plan.end_ns, res, dtype=np.int64)
        t = np.append(t, plan.end_ns) if t[-1] < plan.end_ns else t
        q, _, _ = plan.sample_many(t)
        return JointTrajectory(plan.joint_names, t, q, plan.gripper_many(t))

    # ------------------------------------------------------------------------------------------- submit
    def submit(self, traj: JointTrajectory, now_ns: int | None = None) -> ScheduleResult:
        """Schedule one decoded chunk at ``now_ns`` (default: the clock's now) and hand it to the executor.

        Raises:
            ShapeError: ``traj`` is not a JointTrajectory or its joints are not the executor's.
        """
        if not isinstance(traj, JointTrajectory):
            raise ShapeError(f"ChunkScheduler.submit: expected a JointTrajectory, got {type(traj).__name__}")
        robot_joints = tuple(self.executor.joint_names)
        if tuple(traj.joint_names) != robot_joints:
            raise ShapeError(
                f"ChunkScheduler.submit: trajectory joints {traj.joint_names} are not the robot's {robot_joints}"
            )
        with self._lock:
            now = int(self.clock.now_ns() if now_ns is None else now_ns)
            self._counts["submitted"] += 1
            future, skipped = self._future(traj, now)
            self._counts["steps_skipped"] += skipped
            if future is None:
                self._counts["stale"] += 1
                log.warning(
                    "chunk stale: all %d steps are in the past (last %.1f ms ago); latency exceeds the horizon",
                    len(traj),
                    (now - int(traj.t_ns[-1])) / 1e6,
                )
                return ScheduleResult(False, "stale", self.mode.value, skipped, None, None, now)
            try:
                timing = self.planner.time(future)
                chunk = timing.plan
                if timing.method in ("toppra", "stretch"):
                    self._counts["retimed"] += 1
                if self.mode == BlendMode.ENSEMBLE:
                    self._chunks = [c for c in self._chunks if (c.policy_end_ns or c.end_ns) > now]
                    self._chunks = self._chunks[-(self.config.max_chunks - 1) :] if self.config.max_chunks > 1 else []
                    self._chunks.append(chunk)
                    if len(self._chunks) > 1:
                        chunk = self.planner.time(self._ensemble_target(chunk, now)).plan
                target = self.planner.extend(chunk)
                t_planned = max(now, self.clock.now_ns())
                freeze = self._freeze_ns(t_planned)
                old = self._active_covering(freeze) if self.mode != BlendMode.NONE else None
                if old is None:
                    out, used = target, ("fresh" if self.mode != BlendMode.NONE else "none")
                else:
                    prefix = self._prefix(old, now, freeze)
                    if prefix is not None:
                        out = self.planner.splice(prefix, target)
                    else:
                        out = self.planner.join(old.sample(freeze), freeze, target)
                    used = self.mode.value
            except MotionError as exc:
                self._counts["motion"] += 1
                log.error("chunk refused: no motion within the limits (%s)", exc)
                return ScheduleResult(False, "motion", self.mode.value, skipped, None, None, now)
            accepted = self._hand_over(out, t_planned)
            waypoints = self._waypoints(out)
            if accepted:
                self._counts["accepted"] += 1
                if used == "fresh":
                    self._counts["fresh"] += 1
                return ScheduleResult(True, "ok", used, skipped, out, waypoints, now, timing.method, timing.slowdown)
            self._counts["rejected"] += 1
            return ScheduleResult(False, "rejected", used, skipped, out, waypoints, now, timing.method, timing.slowdown)

    # ------------------------------------------------------------------------------------------ move_to
    def move_to(self, q_target: np.ndarray, speed_fraction: float = 1.0, now_ns: int | None = None) -> ScheduleResult:
        """Hand over a move to rest at ``q_target`` ((n,) rad; e.g. a retreat to the start posture): the executing
        plan is kept for the hand-over prefix, then a ruckig point-to-point move from its state there, within
        ``speed_fraction`` of the join limits (its duration follows from the distance and the limits). Nothing
        executing: the move starts from the executor's last plan at rest (the executor joins it from what it
        commands). Forgets the ensemble's chunks. The result's ``mode`` is ``"move"``, its plan ends at
        ``plan.end_ns`` (the policy may run again before that)."""
        q = np.asarray(q_target, dtype=np.float64)
        n = len(self.executor.joint_names)
        if q.shape != (n,) or not np.all(np.isfinite(q)):
            raise ShapeError(f"ChunkScheduler.move_to: expected finite ({n},) rad, got {q}")
        if not 0 < speed_fraction <= 1:
            raise ConfigError(f"ChunkScheduler.move_to: speed_fraction must be in (0, 1], got {speed_fraction}")
        with self._lock:
            now = int(self.clock.now_ns() if now_ns is None else now_ns)
            t_planned = max(now, self.clock.now_ns())
            freeze = self._freeze_ns(t_planned)
            self._chunks.clear()
            try:
                old = self._active_covering(freeze)
                if old is not None:
                    prefix = self._prefix(old, now, freeze)
                    move = self.planner.move_to(old.sample(freeze), freeze, q, speed_fraction)
                    out = prefix.then(move) if prefix is not None else move
                else:
                    start = self._resting_state()
                    out = self.planner.move_to(start, t_planned, q, speed_fraction)
                out = out.with_policy_end(None)
            except MotionError as exc:
                self._counts["motion"] += 1
                log.error("move refused: no motion within the limits (%s)", exc)
                return ScheduleResult(False, "motion", "move", 0, None, None, now)
            accepted = self._hand_over(out, t_planned)
            waypoints = self._waypoints(out)
            if accepted:
                self._counts["moves"] += 1
                return ScheduleResult(True, "ok", "move", 0, out, waypoints, now)
            self._counts["rejected"] += 1
            return ScheduleResult(False, "rejected", "move", 0, out, waypoints, now)

    # ------------------------------------------------------------------------------------------ hand-over
    def _freeze_ns(self, t_planned: int) -> int:
        """Where the executing prefix ends: the plan must reach the executor before that — after the timing (ms of
        TOPP-RA on a loaded host), the join and the hand-over (their recent duration, measured) — plus
        ``handover_s``."""
        return t_planned + round((self.config.handover_s + self._handover_est_s) * 1e9)

    def _prefix(self, old: MotionPlan, now: int, freeze: int) -> MotionPlan | None:
        """The executing plan kept up to ``freeze``, from a little before ``now`` (so that the executor, picking the
        new plan up at its next tick, finds it continuing exactly what it commands)."""
        keep_from = max(old.start_ns, min(now, freeze) - 4 * round(self.config.resample_dt_s * 1e9))
        return old.after(keep_from).until(freeze) if freeze > keep_from else None

    def _resting_state(self) -> JointState:
        """Where the executor comes to rest when nothing executing is kept: its plan's end, else what it commands."""
        active = self.executor.active_plan
        if active is not None:
            return JointState.at_rest(active.end_state.q)
        commanded = getattr(self.executor, "commanded", None)
        if commanded is None:
            raise MotionError("the executor has neither a plan nor a commanded posture yet (not started)")
        return JointState.at_rest(commanded[0])

    def _hand_over(self, plan: MotionPlan, t_planned: int) -> bool:
        accepted = self.executor.set_plan(plan)
        took_s = max(self.clock.now_ns() - t_planned, 0) * 1e-9
        # a slower hand-over raises the estimate at once, a faster one lowers it gradually
        self._handover_est_s = max(took_s, 0.8 * self._handover_est_s + 0.2 * took_s)
        if accepted:
            self._active = plan
        return accepted
