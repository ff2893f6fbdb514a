"""What the harness records during a run: every command the executor sends, every policy call, every warning.

:class:`RecordingRobot` sits between the executor and the real robot and audits **every** set-point against the
joint limits (position, and velocity / acceleration / jerk by finite differences over the executor period) before
forwarding it; :class:`TimedClient` is the real policy client that also keeps each reply's timing;
:class:`WarningCounter` counts warnings per logger.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.robots.base import JointLimits, Robot
from robot_stack.transport.client import PolicyClient, Reply
from robot_stack.types import RobotState

log = logging.getLogger("robot_stack.hil")

__all__ = ["AUDIT_TOLERANCE", "CallRecord", "RecordingRobot", "TimedClient", "WarningCounter"]

#: Relative slack of the audit on velocity/acceleration/jerk (float round-off of finite differences only).
AUDIT_TOLERANCE = 1e-6


class RecordingRobot(Robot):
    """A :class:`Robot` wrapper that records and audits every command, then forwards it to ``robot``.

    A command is *unsafe* when it is non-finite, outside ``limits`` position bounds, or when its finite-difference
    velocity, acceleration or jerk against the previous commands (over ``period_s``) exceeds the limits by more
    than :data:`AUDIT_TOLERANCE` (relative). The first three commands of a run only get the checks their history
    allows. Unsafe commands are still forwarded (the robot's own checks are the next line) and counted by reason.

    Args:
        robot: the real robot.
        clock_ns: time source for the record (the process clock's ``now_ns``).
        period_s: the executor period the finite differences are taken over, seconds.
        state_every: read the measured joint positions every this many commands (for the plot), and call
            :attr:`monitor` as often.
        capacity: commands kept (older ones are dropped from the record, never from the audit).
    """

    def __init__(
        self,
        robot: Robot,
        clock_ns: Callable[[], int],
        period_s: float,
        state_every: int = 10,
        capacity: int = 500_000,
    ) -> None:
        self.robot = robot
        self._now = clock_ns
        self.period_s = float(period_s)
        self.state_every = max(1, int(state_every))
        self.capacity = int(capacity)
        self.executor: Any = None  # set by the harness; its ``state`` is recorded with each untraced command
        #: set by the harness when an episode's loop ends: traced commands from then on (the final stop ramp) are
        #: recorded as ``"stopped"``, not as the executor's hold (None: the episode runs)
        self.stopped_from_ns: int | None = None
        # set by the harness: called (executor thread) every ``state_every`` commands, e.g. the task's success
        # predicate, so that events shorter than a policy cycle (a brief touch) are latched; an exception in it is
        # logged and the monitor dropped (it must never stop the control loop)
        self.monitor: Callable[[], Any] | None = None
        self.unsafe: Counter[str] = Counter()
        self.commands = 0
        self.max_jerk_ratio = 0.0
        self.max_jerk = 0.0
        self.t_ns: list[int] = []
        self.q_cmd: list[np.ndarray] = []
        self.states: list[str] = []
        #: per command, from the executor's tick trace (``command_traced``): the plan's set-point before the safety
        #: filter ((n,) rad; NaN where the command came without a trace) and the filter's intervention count so far
        self.q_plan: list[np.ndarray] = []
        self.interventions: list[int] = []
        #: index into the per-command lists where each episode begins (:meth:`reset_history`)
        self.episode_starts: list[int] = [0]
        self.t_meas_ns: list[int] = []
        self.q_meas: list[np.ndarray] = []
        self.tcp_meas: list[np.ndarray] = []
        self._hist: list[np.ndarray] = []
        self._hist_t: list[float | None] = []
        self._lock = threading.Lock()

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.robot.joint_names

    @property
    def limits(self) -> JointLimits:
        return self.robot.limits

    def read_state(self) -> RobotState:
        return self.robot.read_state()

    def reset_history(self) -> None:
        """Forget the previous commands (a new episode starts from a teleported arm); the record marks where the
        new episode begins."""
        with self._lock:
            self._hist = []
            self._hist_t = []
            self.stopped_from_ns = None
            if len(self.t_ns) > self.episode_starts[-1]:
                self.episode_starts.append(len(self.t_ns))

    def clear_record(self) -> None:
        """Forget the recorded commands and states (a long run that has read them); the audit's counters
        (:attr:`unsafe`, :attr:`commands`, the jerk peaks) and its command history go on."""
        with self._lock:
            for record in (self.t_ns, self.q_cmd, self.states, self.q_plan, self.interventions):
                record.clear()
            for record in (self.t_meas_ns, self.q_meas, self.tcp_meas):
                record.clear()
            self.episode_starts = [0]

    def _audit(self, q: np.ndarray, t_ns: int | None = None) -> None:
        """Judge ``q`` against the limits; with ``t_ns`` (the tick time the executor computed it for) as divided
        differences over the real times between set-points, else over the nominal period."""
        lim = self.limits
        if q.shape != lim.lower.shape or not np.all(np.isfinite(q)):
            self.unsafe["nonfinite_or_shape"] += 1
            return
        if np.any(q < lim.lower) or np.any(q > lim.upper):
            self.unsafe["position"] += 1
        hist, times = self._hist, self._hist_t
        hist.append(q)
        times.append(None if t_ns is None else t_ns * 1e-9)
        if len(hist) > 4:
            del hist[0], times[0]
        slack = 1.0 + AUDIT_TOLERANCE
        if any(t is None for t in times) or len(set(times)) < len(times):
            dt = self.period_s
            span = [dt * k for k in range(len(hist))]  # nominal: every step one period
        else:
            span = [t - times[0] for t in times]  # type: ignore[operator]
        if len(hist) >= 2 and np.any(np.abs(hist[-1] - hist[-2]) / (span[-1] - span[-2]) > lim.velocity * slack):
            self.unsafe["velocity"] += 1
        if len(hist) >= 3:
            v1 = (hist[-2] - hist[-3]) / (span[-2] - span[-3])
            v2 = (hist[-1] - hist[-2]) / (span[-1] - span[-2])
            acc = 2.0 * (v2 - v1) / (span[-1] - span[-3])
            if np.any(np.abs(acc) > lim.acceleration * slack + 1e-6):
                self.unsafe["acceleration"] += 1
        if len(hist) >= 4:
            v0 = (hist[-3] - hist[-4]) / (span[-3] - span[-4])
            a0 = 2.0 * (v1 - v0) / (span[-2] - span[-4])
            jerk = 3.0 * (acc - a0) / (span[-1] - span[-4])
            ratio = float(np.max(np.abs(jerk) / lim.jerk))
            self.max_jerk_ratio = max(self.max_jerk_ratio, ratio)
            self.max_jerk = max(self.max_jerk, float(np.max(np.abs(jerk))))
            if ratio > slack + 1e-3:
                self.unsafe["jerk"] += 1

    def command_at(self, t_ns: int, q: np.ndarray, gripper: float | None = None) -> None:
        """:meth:`command` for a set-point computed for tick time ``t_ns``: audited over the real time between
        ticks (a skipped tick is not a velocity jump); forwarded with its time when the robot takes one."""
        self.command(q, gripper, t_ns)

    def command_traced(self, t_ns: int, q: np.ndarray, gripper: float | None, trace: Any) -> None:
        """:meth:`command_at` with the executor's tick trace (:class:`~robot_stack.control.executor.TickTrace`):
        the plan's own set-point before the filter, the executor state and the filter's intervention count are
        recorded with the command (the plan audit of :mod:`robot_stack.hil.metrics`)."""
        self.command(q, gripper, t_ns, trace)

    def command(
        self, q: np.ndarray, gripper: float | None = None, _t_ns: int | None = None, _trace: Any = None
    ) -> None:
        arr = np.array(q, dtype=np.float64)
        with self._lock:
            self._audit(arr, _t_ns)
            self.commands += 1
            if len(self.t_ns) < self.capacity:
                self.t_ns.append(self._now() if _t_ns is None else int(_t_ns))
                self.q_cmd.append(arr)
                if _trace is not None:
                    stopping = self.stopped_from_ns is not None and int(_t_ns or 0) >= self.stopped_from_ns
                    self.states.append("stopped" if stopping else _trace.state.value)
                    self.q_plan.append(np.array(_trace.q_plan, dtype=np.float64))
                    self.interventions.append(int(_trace.interventions))
                else:
                    state = getattr(self.executor, "state", None) if self.executor is not None else "stopped"
                    self.states.append(getattr(state, "value", str(state)))
                    self.q_plan.append(np.full_like(arr, np.nan))
                    self.interventions.append(-1)
        command_at = getattr(self.robot, "command_at", None)
        if _t_ns is not None and command_at is not None:
            command_at(_t_ns, q, gripper)
        else:
            self.robot.command(q, gripper)
        if self.commands % self.state_every != 0:
            return
        if len(self.t_meas_ns) < self.capacity:
            st = self.robot.read_state()
            self.t_meas_ns.append(st.t_ns)
            self.q_meas.append(st.q)
            self.tcp_meas.append(st.ee_pose.translation)
        monitor = self.monitor
        if monitor is not None:
            try:
                monitor()
            except Exception:  # a broken monitor must not stop the executor thread
                log.exception("HIL monitor %r failed; monitoring stopped for this run", monitor)
                self.monitor = None

    @property
    def unsafe_total(self) -> int:
        return int(sum(self.unsafe.values()))


@dataclass(frozen=True)
class CallRecord:
    """One policy call as the robot saw it (robot clock, ns).

    Attributes:
        t_send_ns, t_recv_ns: request sent / reply received.
        t_obs_ns: the observation's capture time (from the request meta).
        server_start_ns, server_end_ns: the model ran in this window, *server* clock (0 if not reported).
        round_trip_ms, infer_ms: from the reply's timing.
    """

    t_send_ns: int
    t_recv_ns: int
    t_obs_ns: int
    server_start_ns: int
    server_end_ns: int
    round_trip_ms: float
    infer_ms: float


class TimedClient(PolicyClient):
    """The real :class:`PolicyClient`, keeping a :class:`CallRecord` of each successful ``infer``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[CallRecord] = []
        self.requests = 0

    def infer(
        self,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> Reply:
        self.requests += 1
        reply = super().infer(arrays, meta, timeout_s, before_send)
        st = reply.server_timing
        self.calls.append(
            CallRecord(
                reply.timing.t_send_ns,
                reply.timing.t_recv_ns,
                int((meta or {}).get("t_obs_ns", 0)),
                int(st.get("t_start_ns", 0)),
                int(st.get("t_end_ns", 0)),
                reply.timing.round_trip_ms,
                reply.timing.infer_ms,
            )
        )
        return reply


class WarningCounter(logging.Handler):
    """Counts WARNING-and-above records per logger name while attached to the ``robot_stack`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.name] += 1

    def __enter__(self) -> WarningCounter:
        logging.getLogger("robot_stack").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("robot_stack").removeHandler(self)
