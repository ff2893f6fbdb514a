"""The fixed-rate executor: trajectory in, safe joint set-points out, at 500 Hz-1 kHz, with a watchdog.

Each tick (at absolute deadlines ``t0 + k * period`` — never ``sleep(dt)``, so errors do not accumulate):

1. pick up the newest trajectory handed over by :meth:`Executor.set_trajectory` (thread-safe, latest wins) and
   blend into it from the state that was being commanded (no position/velocity jump);
   The blend starts from the old trajectory's state at the switch time (or from the commanded state when none
   is active), so the set-point stream stays C1 even while the safety filter is clamping;
2. if a trajectory covers the tick's time (``t <= t_last``; the scheduled deadline, see :meth:`Executor.tick`),
   sample it; otherwise decelerate from the commanded velocity
   within ``hold_decel_fraction`` of the acceleration limits (never jump to a held point, never extrapolate);
   after ``watchdog_timeout_s`` without coverage the executor declares a watchdog hold (state ``HOLDING``, counted
   and logged) and keeps the arm at zero velocity until a new trajectory arrives. A trajectory handed over with
   ``policy_end_ns`` (the :class:`~robot_stack.control.scheduler.ChunkScheduler` does this for its extensions)
   is covered by the policy only up to that time: beyond it the trajectory is a scheduler-made extension that
   brings the arm to rest, it is followed (counted as ``extensions``), but the watchdog counts from
   ``policy_end_ns``, so an extension never delays a safe hold;
3. pass the set-point through the :class:`~robot_stack.control.safety.SafetyFilter` and ``robot.command`` it.

:meth:`Executor.tick` runs one tick synchronously at a given time, so tests and lock-step simulations can drive
the executor deterministically with :class:`~robot_stack.clock.FakeClock`; :meth:`Executor.start` runs the same
ticks in a thread paced by the clock. If the thread wakes more than a period late, the missed ticks are skipped
(counted), not replayed in a burst.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from typing import Any

import numpy as np

from robot_stack.clock import Clock
from robot_stack.control.safety import SafetyFilter
from robot_stack.control.trajectory import TrajectoryFollower
from robot_stack.errors import ConfigError, RobotStackError
from robot_stack.metrics import latency_stats
from robot_stack.robots.base import Robot
from robot_stack.types import JointTrajectory

log = logging.getLogger("robot_stack.control.executor")

__all__ = ["Executor", "ExecutorState"]


class ExecutorState(str, enum.Enum):
    """What the executor is doing."""

    IDLE = "idle"  #: never had a trajectory; holding the start position
    TRACKING = "tracking"  #: following a trajectory that covers now
    STOPPING = "stopping"  #: trajectory ran out; decelerating, watchdog timer running
    HOLDING = "holding"  #: watchdog fired (or stop requested); at / going to zero velocity
    STOPPED = "stopped"  #: thread not running after stop()


class Executor:
    """Streams joint set-points to ``robot`` at ``rate_hz``.

    Args:
        robot: the arm to command.
        clock: monotonic clock (``MonotonicClock`` in production, ``FakeClock`` in tests).
        rate_hz: control rate, Hz.
        safety: the safety filter (default: ``SafetyFilter(robot.limits)``); its period is set to ``1/rate_hz``.
        watchdog_timeout_s: seconds without a trajectory covering now before a watchdog hold is declared.
        blend_s: blend window into each new trajectory, seconds.
        hold_decel_fraction: fraction of the acceleration limits used to stop, in (0, 1].
        lateness_window: number of recent tick-lateness samples kept for statistics.
    """

    def __init__(
        self,
        robot: Robot,
        clock: Clock,
        rate_hz: float = 500.0,
        safety: SafetyFilter | None = None,
        watchdog_timeout_s: float = 0.3,
        blend_s: float = 0.1,
        hold_decel_fraction: float = 0.8,
        lateness_window: int = 8192,
    ) -> None:
        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise ConfigError(f"Executor.rate_hz: expected a positive rate in Hz, got {rate_hz}")
        if not watchdog_timeout_s > 0:
            raise ConfigError(f"Executor.watchdog_timeout_s: expected seconds > 0, got {watchdog_timeout_s}")
        if not 0 < hold_decel_fraction <= 1:
            raise ConfigError(f"Executor.hold_decel_fraction: expected (0, 1], got {hold_decel_fraction}")
        self.robot = robot
        self.clock = clock
        self.rate_hz = float(rate_hz)
        self.period_ns = round(1e9 / rate_hz)
        self.period_s = self.period_ns * 1e-9
        self.safety = safety if safety is not None else SafetyFilter(robot.limits)
        if self.safety.n != len(robot.joint_names):
            raise ConfigError(f"safety filter has {self.safety.n} joints, robot has {len(robot.joint_names)}")
        self.safety.set_period(self.period_s)
        self.watchdog_timeout_ns = int(watchdog_timeout_s * 1e9)
        self.hold_decel_fraction = float(hold_decel_fraction)
        self._follower = TrajectoryFollower(blend_s)
        self._joint_names = tuple(robot.joint_names)
        self._decel = np.asarray(robot.limits.acceleration) * hold_decel_fraction

        self._lock = threading.Lock()  # guards _pending and the counters set_trajectory touches
        self._pending: JointTrajectory | None = None
        self._pending_end_ns: int | None = None
        self._policy_end_ns: int | None = None  # active trajectory: where the policy's own steps end
        self._in_extension = False
        self._extensions = 0
        self._state = ExecutorState.IDLE
        self._last_covered_ns: int | None = None
        self._gripper: float | None = None
        self._started = False  # first tick done (commanded state seeded from the robot)

        self._ticks = 0
        self._skipped = 0
        self._holds = 0
        self._accepted = 0
        self._superseded = 0
        self._rejected: dict[str, int] = {}
        self._command_errors = 0
        self._last_error_log = -math.inf
        self._lateness_ms = np.zeros(lateness_window)
        self._lateness_n = 0
        self._loop_t0_ns: int | None = None
        self._loop_last_ns: int | None = None
        self._loop_ticks = 0

        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()

    # --------------------------------------------------------------------------------------------- intake
    @property
    def state(self) -> ExecutorState:
        return self._state

    def _reject(self, reason: str, detail: str) -> bool:
        with self._lock:
            self._rejected[reason] = self._rejected.get(reason, 0) + 1
        log.warning("trajectory rejected (%s): %s", reason, detail)
        return False

    def set_trajectory(self, traj: JointTrajectory, policy_end_ns: int | None = None) -> bool:
        """Hand over a new trajectory (thread-safe; the newest wins). Returns False, logging the reason, when it is
        rejected: not a JointTrajectory, wrong joints, stale (last point already in the past), or stopping.

        ``policy_end_ns`` (monotonic ns, optional): the last time the trajectory carries the policy's own targets;
        after it, it is an extension that comes to rest (see the module docstring). The watchdog counts from here.
        None = the whole trajectory is the policy's."""
        if not isinstance(traj, JointTrajectory):
            return self._reject("type", f"expected a JointTrajectory, got {type(traj).__name__}")
        if tuple(traj.joint_names) != self._joint_names:
            return self._reject(
                "joints", f"joint names {traj.joint_names} do not match the robot's {self._joint_names}"
            )
        if not np.all(np.isfinite(traj.positions)):
            return self._reject("nonfinite", "positions contain NaN/Inf")
        now = self.clock.now_ns()
        if int(traj.t_ns[-1]) < now:
            return self._reject(
                "stale",
                f"last point is {(now - int(traj.t_ns[-1])) / 1e6:.1f} ms in the past; send trajectories that "
                "reach into the future (check latency compensation and clock offset)",
            )
        if self._stop_event.is_set():
            return self._reject("stopping", "executor is stopping")
        with self._lock:
            if self._pending is not None:
                self._superseded += 1
            self._pending = traj
            self._pending_end_ns = None if policy_end_ns is None else int(policy_end_ns)
            self._accepted += 1
        return True

    # ----------------------------------------------------------------------------------------------- tick
    def _decelerate(self, q: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Next set-point on a straight-line (joint-space) stop within the deceleration limits."""
        t_stop = float(np.max(np.abs(v) / self._decel))
        if t_stop <= self.period_s:
            return q.copy()  # stops this tick (the safety filter bounds the last step)
        v_next = v * (1.0 - self.period_s / t_stop)
        return q + v_next * self.period_s

    def tick(self, now_ns: int) -> np.ndarray:
        """Run one control tick for monotonic time ``now_ns``; return the (n,) rad set-point sent to the robot.

        The threaded loop passes each tick's scheduled deadline ``t0 + k * period`` (its wake-up lateness is
        recorded separately), so consecutive set-points are exactly one period apart in trajectory time.

        Raises what the robot or safety filter raise (the threaded loop counts and logs those instead).
        """
        if not self._started:
            st = self.robot.read_state()
            self.safety.reset(st.q, st.dq)
            self._gripper = None
            self._started = True
        prev = self.safety.previous
        assert prev is not None
        q_prev, v_prev, a_prev = prev

        with self._lock:
            pending, self._pending = self._pending, None
            pending_end, self._pending_end_ns = self._pending_end_ns, None
        if pending is not None:
            if self._stop_event.is_set():
                self._reject("stopping", "executor is stopping")
            elif int(pending.t_ns[-1]) < now_ns:
                late_ms = (now_ns - int(pending.t_ns[-1])) / 1e6
                self._reject("stale", f"expired {late_ms:.1f} ms before it was picked up")
            else:
                # blend from where the old trajectory wants to be *now* (its desired state), so the command
                # stream into the safety filter stays C1 even while the filter is clamping (it catches up on its
                # own); with no active trajectory (idle, stopping, holding), from the commanded state
                if self._follower.spline is not None and now_ns <= self._follower.spline.t_end_ns:
                    old = self._follower.sample(now_ns)
                    self._follower.switch(pending, now_ns, old.q, old.dq, old.ddq)
                else:
                    self._follower.switch(pending, now_ns, q_prev, v_prev, a_prev)
                if self._state in (ExecutorState.HOLDING, ExecutorState.STOPPING):
                    log.info("executor resumed tracking from %s", self._state.value)
                self._state = ExecutorState.TRACKING
                self._policy_end_ns = pending_end
                self._in_extension = False
                if pending_end is None or now_ns <= pending_end:
                    self._last_covered_ns = now_ns

        spline = self._follower.spline
        covered = spline is not None and now_ns <= spline.t_end_ns and not self._stop_event.is_set()
        end = self._policy_end_ns
        if covered and end is not None and now_ns > end:
            # beyond the policy's steps: follow the extension (the arm comes to rest along its motion) until the
            # next chunk arrives, but never past the watchdog deadline, counted from the policy's last step
            if not self._in_extension:
                self._in_extension = True
                self._extensions += 1
            if self._last_covered_ns is not None and now_ns - self._last_covered_ns >= self.watchdog_timeout_ns:
                covered = False
        if covered:
            sample = self._follower.sample(now_ns)
            q_des = sample.q
            if sample.gripper is not None:
                self._gripper = sample.gripper
            if end is None or now_ns <= end:
                self._last_covered_ns = now_ns
        else:
            if spline is not None:
                self._follower.clear()
                self._policy_end_ns = None
            q_des = self._decelerate(q_prev, v_prev)
            if self._state == ExecutorState.TRACKING:
                self._state = ExecutorState.STOPPING
            if (
                self._state == ExecutorState.STOPPING
                and self._last_covered_ns is not None
                and now_ns - self._last_covered_ns >= self.watchdog_timeout_ns
            ):
                self._state = ExecutorState.HOLDING
                self._holds += 1
                log.warning(
                    "watchdog: no trajectory covered the last %.0f ms; decelerating to a hold until a new "
                    "trajectory arrives",
                    (now_ns - self._last_covered_ns) / 1e6,
                )

        q_safe = self.safety.filter(q_des)
        self.robot.command(q_safe, self._gripper)
        self._ticks += 1
        return q_safe

    @property
    def commanded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(q rad, dq rad/s, ddq rad/s^2) of the last set-point sent, or None before the first tick."""
        return self.safety.previous

    # ----------------------------------------------------------------------------------------------- loop
    def start(self) -> None:
        """Run ticks in a daemon thread at ``rate_hz`` (absolute deadlines on ``clock``). Idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop_event.clear()
        if self._state == ExecutorState.STOPPED:
            self._state = ExecutorState.HOLDING
        self._thread = threading.Thread(target=self._run, name="robot_stack-executor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Drop the trajectory, decelerate to zero velocity within limits, then end the thread (joined)."""
        self._stop_event.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.error("executor thread did not stop within %.1f s", timeout_s)
        self._thread = None
        self._state = ExecutorState.STOPPED

    def _record_lateness(self, late_ns: int) -> None:
        self._lateness_ms[self._lateness_n % self._lateness_ms.shape[0]] = late_ns / 1e6
        self._lateness_n += 1

    def _run(self) -> None:
        clock, period = self.clock, self.period_ns
        t0 = clock.now_ns()
        self._loop_t0_ns, self._loop_ticks = t0, 0
        k = 0
        while True:
            deadline = t0 + k * period
            clock.sleep_until(deadline)
            now = clock.now_ns()
            self._record_lateness(now - deadline)
            try:
                # sample at the scheduled time, not the wake-up time: set-points stay exactly one period apart
                # in trajectory time, so wake-up jitter does not turn into velocity/acceleration noise
                self.tick(deadline)
            except RobotStackError as exc:
                self._command_errors += 1
                if time.monotonic() - self._last_error_log > 1.0:
                    log.error("executor tick failed (%d so far): %s", self._command_errors, exc)
                    self._last_error_log = time.monotonic()
            self._loop_ticks += 1
            self._loop_last_ns = clock.now_ns()
            if self._stop_event.is_set():
                prev = self.safety.previous
                if prev is None or float(np.max(np.abs(prev[1]))) < 1e-6:
                    break
                if self._state != ExecutorState.HOLDING:
                    self._state = ExecutorState.HOLDING
            k += 1
            behind = self._loop_last_ns - (t0 + k * period)
            if behind > period:  # more than a period late: skip the missed ticks instead of bursting
                skip = behind // period
                self._skipped += int(skip)
                k += int(skip)
        log.info("executor stopped after %d ticks (%d skipped)", self._loop_ticks, self._skipped)

    # ---------------------------------------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        """Counters and timing: ticks, achieved_rate_hz (threaded loop), skipped_ticks, holds, extensions (times
        the policy's steps ran out and an extension was followed), lateness p50/p99/max in ms over the last
        ``lateness_window`` ticks, trajectories accepted/rejected, safety."""
        n = min(self._lateness_n, self._lateness_ms.shape[0])
        out: dict[str, Any] = {
            "state": self._state.value,
            "ticks": self._ticks,
            "skipped_ticks": self._skipped,
            "holds": self._holds,
            "extensions": self._extensions,
            "trajectories_accepted": self._accepted,
            "trajectories_superseded": self._superseded,
            "trajectories_rejected": dict(self._rejected),
            "command_errors": self._command_errors,
            "safety": self.safety.stats(),
        }
        if self._loop_t0_ns is not None and self._loop_last_ns is not None and self._loop_last_ns > self._loop_t0_ns:
            out["achieved_rate_hz"] = round(self._loop_ticks / ((self._loop_last_ns - self._loop_t0_ns) / 1e9), 2)
        if n:
            out.update(latency_stats(self._lateness_ms[:n] / 1e3, prefix="lateness_"))
        return out
