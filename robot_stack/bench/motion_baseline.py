"""The baseline of ``bench motion``: chunk hand-over the way the stack did it before issue 13 (for comparison only).

:class:`FixedBlendScheduler` stands in for :class:`~robot_stack.control.scheduler.ChunkScheduler` in the policy
cycle. For every chunk it drops the steps already in the past and then, like the pre-issue-13 splice:

* the new chunk is followed **at the policy's own timing** through the C1 cubic Hermite spline of its steps
  (:class:`~robot_stack.control.trajectory.JointSpline`) -- never re-timed within the limits;
* the switch is a **fixed 0.1 s quintic blend** ``(1 - s(tau)) q_old + s(tau) q_new`` from the executing plan (or
  the commanded posture at rest) into that spline, whatever the mismatch in position and velocity.

The result is handed to the phase-1 executor as a plan that continues exactly what it commands (the executing
prefix is kept), so the executor adopts it unchanged and its safety filter has to clamp what the blend and the
untimed chunk ask for. What this baseline does *not* reproduce of the old stack: the executor now differences over
the real tick times (skipped ticks, cause A) and the come-to-rest after a chunk's last step is a ruckig stop; so
its intervention counts are a lower bound of the old stack's.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from robot_stack.control.plan import MotionPlan
from robot_stack.control.scheduler import ChunkScheduler, ScheduleResult, smoothstep5
from robot_stack.control.trajectory import JointSpline
from robot_stack.errors import MotionError, ShapeError
from robot_stack.types import JointTrajectory

__all__ = ["FixedBlendScheduler"]

#: The old splice's blend window, seconds.
BLEND_S = 0.1
#: The executing plan is kept this long before the blend starts (ns): the executor adopts the plan within it.
HANDOVER_NS = 30_000_000
#: Spacing of the blend's Hermite pieces, seconds.
_PIECE_S = 0.002


class FixedBlendScheduler:
    """A drop-in for the policy cycle's scheduler with the pre-issue-13 hand-over (see the module docstring).

    Args:
        executor: the executor (thread or process) the plans go to.
        blend_s: the fixed blend window, seconds.
    """

    def __init__(self, executor: Any, blend_s: float = BLEND_S) -> None:
        self.executor = executor
        self.clock = executor.clock
        self.blend_ns = round(blend_s * 1e9)
        self._moves = ChunkScheduler(executor)  # retreats (recovery) as the current stack makes them
        self._lock = threading.Lock()
        self.counts = {"submitted": 0, "accepted": 0, "stale": 0, "rejected": 0}

    def stats(self) -> dict[str, Any]:
        return {"mode": "fixed_blend", **self.counts}

    def move_to(self, q_target: np.ndarray, speed_fraction: float = 1.0, now_ns: int | None = None) -> ScheduleResult:
        return self._moves.move_to(q_target, speed_fraction, now_ns)

    def _blend(self, old: MotionPlan | None, q_rest: np.ndarray, spline: JointSpline, t0: int, t1: int) -> MotionPlan:
        """The quintic blend from ``t0`` over :attr:`blend_ns`, as C1 cubic Hermite pieces every 2 ms up to ``t1``
        (exact values and slopes; after the blend window it is the spline itself, extrapolated along its first
        tangent before its first step, as the old sampler did)."""
        t = np.arange(t0, t1, round(_PIECE_S * 1e9), dtype=np.int64)
        t = np.append(t, t1) if t[-1] < t1 else t
        if old is not None:
            q_old, v_old, _ = old.sample_many(t)
        else:
            q_old, v_old = np.broadcast_to(q_rest, (len(t), len(q_rest))), np.zeros((len(t), len(q_rest)))
        new = [spline.sample(int(tk)) for tk in t]
        q_new = np.array([s.q for s in new])
        v_new = np.array([s.dq for s in new])
        tau = np.clip((t - t0) / self.blend_ns, 0.0, 1.0)
        w = smoothstep5(tau)[:, None]
        dw = (30.0 * tau * tau * (1.0 - tau) ** 2 / (self.blend_ns * 1e-9))[:, None]
        q = (1.0 - w) * q_old + w * q_new
        v = (1.0 - w) * v_old + w * v_new + dw * (q_new - q_old)
        h = np.diff(t)[:, None] * 1e-9
        d = np.diff(q, axis=0) / h
        c = np.empty((len(h), 4, q.shape[1]))
        c[:, 0], c[:, 1] = q[:-1], v[:-1]
        c[:, 2] = (3.0 * d - 2.0 * v[:-1] - v[1:]) / h
        c[:, 3] = (v[:-1] + v[1:] - 2.0 * d) / (h * h)
        breaks = np.append(0.0, np.cumsum(h[:, 0]))
        return MotionPlan(spline.traj.joint_names, int(t0), breaks, c)

    def submit(self, traj: JointTrajectory, now_ns: int | None = None) -> ScheduleResult:
        """Hand ``traj`` over with the fixed blend (never re-timed within the limits)."""
        if not isinstance(traj, JointTrajectory):
            raise ShapeError(f"FixedBlendScheduler.submit: expected a JointTrajectory, got {type(traj).__name__}")
        with self._lock:
            now = int(self.clock.now_ns() if now_ns is None else now_ns)
            self.counts["submitted"] += 1
            t = np.asarray(traj.t_ns, dtype=np.int64)
            keep = np.flatnonzero(t >= now)
            skipped = len(t) - len(keep)
            if len(keep) < 2:
                self.counts["stale"] += 1
                return ScheduleResult(False, "stale", "fixed_blend", skipped, None, None, now)
            future = JointTrajectory(traj.joint_names, t[keep], np.asarray(traj.positions)[keep])
            spline = JointSpline(future)
            # the executor picks the plan up at one of its next ticks: the blend starts a little later, so that it
            # finds the executing plan continued exactly and adopts this plan as it is (the old executor blended
            # from what it commanded at the switch)
            start = max(now, self.clock.now_ns()) + HANDOVER_NS
            active = self.executor.active_plan
            commanded = self.executor.commanded
            q_rest = commanded[0] if commanded is not None else np.asarray(traj.positions[0], dtype=np.float64)
            old = active if active is not None and active.end_ns > start else None
            keep_from = start - HANDOVER_NS - 8_000_000
            if old is not None:
                prefix = old.after(max(keep_from, old.start_ns)).until(start)
            else:
                prefix = MotionPlan.hold(traj.joint_names, q_rest, keep_from, (start - keep_from) * 1e-9)
            dense_end = max(start + self.blend_ns, spline.t0_ns + 1_000_000)
            plan = prefix.then(self._blend(old, q_rest, spline, start, dense_end))
            chunk = spline.as_plan()
            if dense_end < chunk.end_ns - 1_000_000:
                plan = plan.then(chunk.after(dense_end))
            plan = plan.with_policy_end(int(t[keep[-1]]))
            try:
                plan = self.executor.planner.extend(plan)
            except MotionError:
                self.counts["rejected"] += 1
                return ScheduleResult(False, "motion", "fixed_blend", skipped, None, None, now)
            accepted = self.executor.set_plan(plan)
            self.counts["accepted" if accepted else "rejected"] += 1
            return ScheduleResult(accepted, "ok" if accepted else "rejected", "fixed_blend", skipped, plan, None, now)
