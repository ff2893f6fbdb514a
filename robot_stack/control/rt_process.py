"""The executor in its own real-time process: the 500 Hz loop no longer shares a GIL with rendering, IK and ZeroMQ.

:class:`ProcessExecutor` has the interface of :class:`~robot_stack.control.executor.Executor` (``set_plan``,
``set_trajectory``, ``state``, ``commanded``, ``active_plan``, ``safety.stats()``, ``stats()``, ``start``/``stop``)
and runs the very same ``Executor`` — ticks, watchdog, ruckig transitions, safety filter — in a child process
started with ``spawn``:

* **set-up in the child**: pinned to one CPU (``os.sched_setaffinity``; by default the last one this process may
  use), ``SCHED_FIFO`` at ``RealtimeConfig.fifo_priority`` where the host allows it (``os.sched_setscheduler``;
  otherwise it logs why and runs at normal priority — ``docs/realtime.md`` describes a PREEMPT_RT host), garbage
  collection frozen and disabled in the loop (young-generation collections every few seconds), and it ends
  itself when its parent dies (``PR_SET_PDEATHSIG``, plus a parent check);
* **plans in**: the main process times and splices chunks (TOPP-RA, ruckig) as before and sends each
  :class:`~robot_stack.control.plan.MotionPlan` as raw bytes over a pipe (a JSON header and float64 arrays, never
  pickled); the loop polls the pipe before every tick (latest wins). A plan that does not continue what the loop
  commands (a first chunk, a chunk after a hold, blend mode ``none``) is joined onto here, from the loop's plan at
  a hand-over time just ahead (``RealtimeConfig.handover_s``), so the loop adopts it instead of running a ruckig
  join (milliseconds of Python) inside a 2 ms tick;
* **state out**: after every tick the loop publishes the commanded state, the executor state, every counter and
  its lateness samples into shared memory under a seqlock (:class:`~robot_stack.control.shared.SeqlockBlock`), and
  the plan it follows whenever it changes (a plan it joined or a stop it made itself, in a
  :class:`~robot_stack.control.shared.ByteSlot`; a plan it adopted as sent, by id), so the scheduler can splice
  from exactly what executes. The loop never waits for the main process;
* **time**: each tick is computed for its deadline or, after a missed deadline, for the true time; the filter
  differences over the real elapsed time; overruns are counted (``stats()["overruns"]``) and logged in the child.

**Where the robot lives** (``RobotSpec``): the command sink is built *in the real-time process* from an importable
factory. For hardware (a ROS 2 / ros2_control bridge, a vendor SDK) that is the robot driver itself. For the
MuJoCo simulation, whose world must stay in the main process with the camera that renders it and the task that
scores it, the sink is a :class:`~robot_stack.control.setpoints.RingRobot`: every set-point goes into a
shared-memory ring with its timestamp, and :class:`~robot_stack.control.setpoints.SetpointRelay` applies them to
the :class:`~robot_stack.sim.robot.SimRobot` *at their own times* whenever the world is synced (before every render
or state read) — physics sees the real-time loop's exact timing however late the main process gets to it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_stack.clock import Clock, MonotonicClock
from robot_stack.config import import_object
from robot_stack.control.box_guard import box_guard_of
from robot_stack.control.executor import STATE_BY_CODE, Executor, ExecutorState, plan_refusal
from robot_stack.control.motion import MotionConfig, MotionPlanner
from robot_stack.control.plan import JointState, MotionPlan
from robot_stack.control.safety import INTERVENTION_KINDS, SafetyFilter, WorkspaceBox
from robot_stack.control.shared import ByteSlot, SeqlockBlock
from robot_stack.errors import ConfigError, MotionError, RobotError, ShapeError
from robot_stack.metrics import latency_stats
from robot_stack.robots.base import JointLimits, Robot
from robot_stack.types import JointTrajectory

log = logging.getLogger("robot_stack.control.rt_process")

__all__ = ["ProcessExecutor", "RealtimeConfig", "RobotSpec", "SafetySpec", "resolve"]

_REJECT_REASONS = ("stale", "stopping", "motion", "not_at_rest", "joints", "type", "malformed")
_INT_FIELDS = (
    "t_last_ns",
    "state",
    "ticks",
    "skipped",
    "overruns",
    "holds",
    "extensions",
    "joins",
    "adopted",
    "accepted",
    "superseded",
    "command_errors",
    "loop_t0_ns",
    "loop_last_ns",
    "loop_ticks",
    "lateness_n",
    "ready",
    "done",
    "fifo",
    "cpu",
    "active_id",
    "active_version",
    "session",
    *(f"safety_{k}" for k in INTERVENTION_KINDS),
    "safety_calls",
    "safety_catch_up",
    *(f"rejected_{r}" for r in _REJECT_REASONS),
)
_I = {name: i for i, name in enumerate(_INT_FIELDS)}
_ACTIVE_NONE, _ACTIVE_OWN = -1, -2


def resolve(target: str) -> Any:
    """The object named ``"package.module:attribute"`` (ConfigError if it does not import)."""
    return import_object(target, "real-time process factory")


@dataclass(frozen=True)
class RobotSpec:
    """How the real-time process builds its command sink: ``factory(**kwargs)`` must return a
    :class:`~robot_stack.robots.base.Robot`; ``factory`` is ``"package.module:callable"`` (built in the child, so
    nothing but this description crosses the process boundary)."""

    factory: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Robot:
        robot = resolve(self.factory)(**dict(self.kwargs))
        if not isinstance(robot, Robot):
            raise ConfigError(f"RobotSpec: {self.factory} returned {type(robot).__name__}, expected a Robot")
        return robot


@dataclass(frozen=True)
class SafetySpec:
    """The safety filter the real-time process builds (see :class:`~robot_stack.control.safety.SafetyFilter`).

    Attributes:
        margin_rad: position limits tightened by this much.
        workspace: optional TCP box ((3,) lower, (3,) upper) in metres, base frame.
        workspace_margin_m: the box braking aims this far inside each face.
        fk_factory: ``"module:callable"`` returning an object with ``fk_xyz`` (for the box), called with
            ``fk_args``: the arm's own kinematics, e.g. ``robot_stack.kinematics.ik:ik_for`` with the arm's name.
        fk_args: positional arguments of ``fk_factory`` (strings: they cross the process boundary).
    """

    margin_rad: float = 0.02
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    workspace_margin_m: float = 1e-5
    fk_factory: str = "robot_stack.kinematics.ik:panda_ik"
    fk_args: tuple[str, ...] = ()

    def build(self, limits: JointLimits) -> SafetyFilter:
        box = fk = fk_many = None
        if self.workspace is not None:
            box = WorkspaceBox(np.array(self.workspace[0]), np.array(self.workspace[1]))
            kinematics = resolve(self.fk_factory)(*self.fk_args)
            fk, fk_many = kinematics.fk_xyz, getattr(kinematics, "fk_xyz_many", None)
        return SafetyFilter(
            limits, self.margin_rad, box, fk, workspace_margin_m=self.workspace_margin_m, fk_xyz_many=fk_many
        )


@dataclass(frozen=True)
class RealtimeConfig:
    """How the real-time process runs.

    Attributes:
        cpu: the CPU to pin it to (None: the last one this process may use; -1: do not pin).
        fifo_priority: ``SCHED_FIFO`` priority 1-99 to ask for (None: do not ask).
        spin_us: the loop sleeps until this long before a deadline, then spins (µs).
        disable_gc: freeze and disable the garbage collector in the loop (young-generation collections every
            ``gc_interval_s``).
        gc_interval_s: see ``disable_gc``.
        start_timeout_s: how long :meth:`ProcessExecutor.start` waits for the process to be ready.
        lateness_window: tick-lateness samples kept for statistics.
        plan_capacity: bytes of the shared slot that carries the executing plan back.
        handover_s: a plan that does not continue what the loop commands is joined onto *here*, in the main
            process, from the loop's plan this far ahead (plus the time recent hand-overs took, measured), so the
            loop only adopts it: a ruckig join (milliseconds of Python) never runs inside a 2 ms tick. A plan that
            reaches the loop after that point is joined there (an overrun, counted).
    """

    cpu: int | None = None
    fifo_priority: int | None = 80
    spin_us: int = 100
    disable_gc: bool = True
    gc_interval_s: float = 5.0
    start_timeout_s: float = 60.0
    lateness_window: int = 8192
    plan_capacity: int = 1 << 20
    handover_s: float = 0.02

    def __post_init__(self) -> None:
        if self.fifo_priority is not None and not 1 <= self.fifo_priority <= 99:
            raise ConfigError(f"RealtimeConfig.fifo_priority: expected 1..99 or None, got {self.fifo_priority}")
        if not (np.isfinite(self.handover_s) and self.handover_s >= 0):
            raise ConfigError(f"RealtimeConfig.handover_s: expected seconds >= 0, got {self.handover_s!r}")
        if self.spin_us < 0 or self.lateness_window < 1 or self.plan_capacity < 1024:
            raise ConfigError("RealtimeConfig: spin_us >= 0, lateness_window >= 1, plan_capacity >= 1024")


@dataclass(frozen=True)
class _ChildArgs:
    robot: RobotSpec
    safety: SafetySpec
    realtime: RealtimeConfig
    motion: MotionConfig
    limits: JointLimits
    rate_hz: float
    watchdog_timeout_s: float
    state_name: str
    slot_name: str
    n_joints: int
    parent_pid: int
    log_level: int


def _n_floats(n: int, window: int) -> int:
    return 3 * n + 3 + 1 + window


# ------------------------------------------------------------------------------------------- the child process
def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent exits (Linux); best effort elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _realtime_setup(cfg: RealtimeConfig) -> tuple[int, int]:
    """Pin and raise priority as configured; return (cpu or -1, 1 if SCHED_FIFO else 0). Logs what it could not do."""
    cpu = -1
    if cfg.cpu != -1 and hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        want = allowed[-1] if cfg.cpu is None else cfg.cpu
        try:
            os.sched_setaffinity(0, {want})
            cpu = want
        except OSError as exc:
            log.warning("real-time process: could not pin to CPU %d (%s); running unpinned", want, exc)
    fifo = 0
    if cfg.fifo_priority is not None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(cfg.fifo_priority))
            fifo = 1
        except (OSError, AttributeError) as exc:
            log.warning(
                "real-time process: SCHED_FIFO priority %d not granted (%s); running at normal priority. Grant "
                "CAP_SYS_NICE or an rtprio limit (docs/realtime.md) for bounded latency",
                cfg.fifo_priority,
                exc,
            )
    return cpu, fifo


class _Publisher:
    """Writes the executor's state into the shared block after every tick (child side)."""

    def __init__(self, ex: Executor, block: SeqlockBlock, slot: ByteSlot, cpu: int, fifo: int, session: int) -> None:
        self.ex, self.block, self.slot = ex, block, slot
        self.n = len(ex.joint_names)
        self.window = ex._lateness_ms.shape[0]
        self.cpu, self.fifo = cpu, fifo
        self.session = session
        self.received: dict[int, tuple[MotionPlan, int]] = {}  # id(plan) -> (plan, plan id from the main process)
        self._reported: MotionPlan | None = None
        self._active_id = _ACTIVE_NONE
        self._lateness_pub = 0
        self._peak = {"velocity": 0.0, "acceleration": 0.0, "jerk": 0.0}

    def note_received(self, plan: MotionPlan, plan_id: int) -> None:
        self.received[id(plan)] = (plan, plan_id)
        if len(self.received) > 16:
            self.received.pop(next(iter(self.received)))

    def publish(self, done: int = 0) -> None:
        ex = self.ex
        plan = ex.active_plan
        if plan is not self._reported:
            self._reported = plan
            if plan is None:
                self._active_id = _ACTIVE_NONE
            elif id(plan) in self.received and self.received[id(plan)][0] is plan:
                self._active_id = self.received[id(plan)][1]
            elif self.slot.write(plan.to_bytes()):
                self._active_id = _ACTIVE_OWN
            else:
                self._active_id = _ACTIVE_NONE  # too large for the slot: the scheduler will not splice from it
        b = self.block
        ints, floats = b.ints, b.floats
        safety = ex.safety.stats()
        b.begin_write()
        ints[_I["t_last_ns"]] = ex._t_last or 0
        ints[_I["state"]] = ex.state.code
        ints[_I["ticks"]] = ex._ticks
        ints[_I["skipped"]] = ex._skipped
        ints[_I["overruns"]] = ex._overruns
        ints[_I["holds"]] = ex._holds
        ints[_I["extensions"]] = ex._extensions
        ints[_I["joins"]] = ex._joins
        ints[_I["adopted"]] = ex._adopted
        ints[_I["accepted"]] = ex._accepted
        ints[_I["superseded"]] = ex._superseded
        ints[_I["command_errors"]] = ex._command_errors
        ints[_I["loop_t0_ns"]] = ex._loop_t0_ns or 0
        ints[_I["loop_last_ns"]] = ex._loop_last_ns or 0
        ints[_I["loop_ticks"]] = ex._loop_ticks
        ints[_I["lateness_n"]] = ex._lateness_n
        ints[_I["ready"]] = 1
        ints[_I["done"]] = done
        ints[_I["fifo"]] = self.fifo
        ints[_I["cpu"]] = self.cpu
        ints[_I["active_id"]] = self._active_id
        ints[_I["active_version"]] = self.slot.version
        ints[_I["session"]] = self.session
        for k in INTERVENTION_KINDS:
            ints[_I[f"safety_{k}"]] = safety[k]
        ints[_I["safety_calls"]] = safety["calls"]
        ints[_I["safety_catch_up"]] = safety["catch_up_ticks"]
        for r in _REJECT_REASONS:
            ints[_I[f"rejected_{r}"]] = ex._rejected.get(r, 0)
        n = self.n
        cmd = ex._cmd
        if cmd is not None:
            floats[0:n] = cmd.q
            floats[n : 2 * n] = cmd.v
            floats[2 * n : 3 * n] = cmd.a
        if done or ex._ticks % 64 == 0:  # the monitor differences in batches: flush it now and then
            self._peak = ex._monitor.peak
        peak = self._peak
        floats[3 * n] = peak["velocity"]
        floats[3 * n + 1] = peak["acceleration"]
        floats[3 * n + 2] = peak["jerk"]
        floats[3 * n + 3] = ex._deviation_max
        base = 3 * n + 4
        w = self.window
        for k in range(self._lateness_pub, ex._lateness_n):
            floats[base + k % w] = ex._lateness_ms[k % w]
        self._lateness_pub = ex._lateness_n
        b.end_write()


def _wait_for_session(conn: Any, parent_pid: int) -> bool:
    """Between sessions: wait for the main process to ask for a new one (``R``: True) or to end the process (``Q``,
    a closed pipe or a dead parent: False). Plans and stops sent meanwhile belong to no session and are dropped."""
    while True:
        try:
            if conn.poll(0.2):
                kind = conn.recv_bytes()[:1]
                if kind == b"R":
                    return True
                if kind == b"Q":
                    return False
            elif os.getppid() != parent_pid:
                return False
        except (EOFError, OSError):
            return False


def _run_session(args: _ChildArgs, conn: Any, robot: Robot, pub_args: tuple[Any, ...], session: int) -> None:
    """One session: a fresh executor (seeded from the robot's state, fresh counters and safety filter) runs until a
    requested stop has brought the arm to rest (or the main process is gone)."""
    block, slot, cpu, fifo = pub_args
    ex = Executor(
        robot,
        MonotonicClock(spin_ns=args.realtime.spin_us * 1000),
        rate_hz=args.rate_hz,
        safety=args.safety.build(args.limits),
        watchdog_timeout_s=args.watchdog_timeout_s,
        motion=args.motion,
        lateness_window=args.realtime.lateness_window,
    )
    pub = _Publisher(ex, block, slot, cpu, fifo, session)
    state = {"ticks": 0, "next_gc": time.monotonic() + args.realtime.gc_interval_s}

    def before_tick() -> None:
        try:
            while conn.poll():
                data = conn.recv_bytes()
                kind = data[:1]
                if kind == b"P":
                    (plan_id,) = struct.unpack("<q", data[1:9])
                    try:
                        plan = MotionPlan.from_bytes(data[9:])
                    except ShapeError as exc:
                        ex._reject("malformed", str(exc))
                        continue
                    if ex.set_plan(plan):
                        pub.note_received(plan, plan_id)
                elif kind in (b"S", b"Q"):
                    ex.request_stop()
        except (EOFError, OSError):
            ex.request_stop()  # the main process is gone: stop within the limits and end
        state["ticks"] += 1
        if state["ticks"] % 250 == 0:
            if os.getppid() != args.parent_pid:
                ex.request_stop()
            if args.realtime.disable_gc and time.monotonic() > state["next_gc"]:
                gc.collect(0)
                state["next_gc"] = time.monotonic() + args.realtime.gc_interval_s

    pub.publish()
    ex.run_loop(before_tick, pub.publish)
    pub.publish(done=1)


def _rt_main(args: _ChildArgs, conn: Any) -> None:
    """Body of the real-time process: sessions (one per :meth:`ProcessExecutor.start`) until told to end."""
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s [rt]: %(message)s")
    _die_with_parent()
    block = SeqlockBlock(len(_INT_FIELDS), _n_floats(args.n_joints, args.realtime.lateness_window), args.state_name)
    slot = ByteSlot(0, args.slot_name)
    try:
        cpu, fifo = _realtime_setup(args.realtime)
        robot = args.robot.build()
        log.info(
            "real-time executor: %.0f Hz, pid %d, CPU %s, %s",
            args.rate_hz,
            os.getpid(),
            cpu if cpu >= 0 else "unpinned",
            "SCHED_FIFO" if fifo else "normal priority",
        )
        if args.realtime.disable_gc:
            gc.collect()
            gc.freeze()
            gc.disable()
        session = 1
        while True:
            _run_session(args, conn, robot, (block, slot, cpu, fifo), session)
            if not _wait_for_session(conn, args.parent_pid):
                break
            session += 1
            if args.realtime.disable_gc:
                gc.collect()  # between sessions the loop does not run: a full collection costs it nothing
    except Exception:
        log.exception("real-time executor failed")
        block.ints[_I["done"]] = 2
        raise
    finally:
        slot.close()
        block.close()


# --------------------------------------------------------------------------------------------- the main side
class _SafetyView:
    """The safety filter's counters as the real-time process published them (``stats()`` like
    :meth:`SafetyFilter.stats`). Its fault events are logged by the real-time process."""

    def __init__(self, owner: ProcessExecutor) -> None:
        self._owner = owner
        self.events: deque[Any] = deque(maxlen=1)

    def stats(self) -> dict[str, int]:
        ints, _ = self._owner._read()
        out = {k: int(ints[_I[f"safety_{k}"]]) for k in INTERVENTION_KINDS}
        out["calls"] = int(ints[_I["safety_calls"]])
        out["total"] = sum(out[k] for k in INTERVENTION_KINDS)
        out["catch_up_ticks"] = int(ints[_I["safety_catch_up"]])
        return out


class ProcessExecutor:
    """:class:`~robot_stack.control.executor.Executor` in a real-time process (see the module docstring).

    Args:
        robot: how the real-time process builds its command sink.
        joint_names: the arm's joints (the sink's must match).
        limits: the arm's joint limits.
        clock: this process's clock (``now`` for stale checks; the child uses the same monotonic clock).
        rate_hz: control rate, Hz.
        watchdog_timeout_s: see :class:`Executor`.
        motion: fractions of the limits (see :class:`MotionConfig`).
        safety: the safety filter the child builds.
        realtime: CPU, priority and loop settings.
        keep_alive: :meth:`stop` ends the *session* (a fresh executor per :meth:`start`: seeded from the robot's
            state, fresh counters, watchdog and safety filter) but keeps the process, so the next :meth:`start`
            costs a message instead of a process spawn (the demo's and HIL's episodes); :meth:`close` ends it.
            False: :meth:`stop` ends the process too.
        relay: the main-side :class:`~robot_stack.control.setpoints.SetpointRelay` of a robot that lives in this
            process (the simulator): its measured state is published before every session, so the new executor
            seeds from where the arm is now.
    """

    def __init__(
        self,
        robot: RobotSpec,
        joint_names: tuple[str, ...],
        limits: JointLimits,
        clock: Clock | None = None,
        rate_hz: float = 500.0,
        watchdog_timeout_s: float = 0.3,
        motion: MotionConfig | None = None,
        safety: SafetySpec | None = None,
        realtime: RealtimeConfig | None = None,
        keep_alive: bool = False,
        relay: Any = None,
    ) -> None:
        if not (rate_hz > 0 and np.isfinite(rate_hz)):
            raise ConfigError(f"ProcessExecutor.rate_hz: expected a positive rate in Hz, got {rate_hz}")
        self.keep_alive = bool(keep_alive)
        self.relay = relay
        self._session = 0
        self.robot_spec = robot
        self._joint_names = tuple(joint_names)
        self._limits = limits
        self.clock: Clock = clock or MonotonicClock()
        self.rate_hz = float(rate_hz)
        self.period_ns = round(1e9 / rate_hz)
        self.watchdog_timeout_s = float(watchdog_timeout_s)
        self.motion_config = motion or MotionConfig()
        self.safety_spec = safety or SafetySpec()
        self.realtime = realtime or RealtimeConfig()
        #: the safety filter's workspace-box model (the child's filter, built here too), for this process's planners
        self.box_guard = None
        if self.safety_spec.workspace is not None:
            self.box_guard = box_guard_of(self.safety_spec.build(limits), 1.0 / self.rate_hz)
        self._intake = MotionPlanner(self._joint_names, limits, self.motion_config, self.box_guard)
        self.safety = _SafetyView(self)
        self._n = len(self._joint_names)
        self._block: SeqlockBlock | None = None
        self._slot: ByteSlot | None = None
        self._proc: Any = None
        self._conn: Any = None
        self._next_id = 0
        self._sent: dict[int, MotionPlan] = {}
        self._active_cache: tuple[int, int, MotionPlan | None] = (_ACTIVE_NONE, -1, None)
        self._final: tuple[np.ndarray, np.ndarray] | None = None
        self._rejected_main: dict[str, int] = {}
        self._stopping = False
        self._last_pid: int | None = None
        self._handover_est_s = 0.0  # recent time from preparing a hand-over to sending it (s)
        self._prepared = 0  # plans joined here, ahead of the loop
        self._freeze_ns = 0  # where the last prepared plan's kept prefix ends (ns)

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start a session: the real-time process (spawned unless a kept-alive one is waiting) runs a fresh executor;
        returns once its loop has ticked. Idempotent while a session runs. Raises RobotError if it fails."""
        if self._proc is not None and self._proc.is_alive() and self._block is not None:
            ints, _ = self._block.read()
            if ints[_I["done"]] == 0:
                return  # a session is running
            if ints[_I["done"]] == 1 and self._conn is not None:
                self._begin(lambda: self._conn.send_bytes(b"R"))
                return
            self.close()
        self._spawn()

    def _spawn(self) -> None:
        self._close_shared()
        self._session = 0
        self._block = SeqlockBlock(len(_INT_FIELDS), _n_floats(self._n, self.realtime.lateness_window))
        self._slot = ByteSlot(self.realtime.plan_capacity)
        ctx = multiprocessing.get_context("spawn")
        receiver, self._conn = ctx.Pipe(duplex=False)
        args = _ChildArgs(
            self.robot_spec,
            self.safety_spec,
            self.realtime,
            self.motion_config,
            self._limits,
            self.rate_hz,
            self.watchdog_timeout_s,
            self._block.name,
            self._slot.name,
            self._n,
            os.getpid(),
            logging.getLogger().getEffectiveLevel(),
        )
        self._proc = ctx.Process(target=_rt_main, args=(args, receiver), name="robot_stack-rt-executor", daemon=True)

        def launch() -> None:
            self._proc.start()
            self._last_pid = int(self._proc.pid)
            receiver.close()

        self._begin(launch)

    def _begin(self, go: Callable[[], None]) -> None:
        """Publish the robot's state (relay), start the next session with ``go()``, wait until its loop ticks."""
        assert self._block is not None
        if self.relay is not None:
            self.relay.publish_state()
        self._final = None
        self._stopping = False
        self._session += 1
        go()
        deadline = time.monotonic() + self.realtime.start_timeout_s
        while True:
            ints, _ = self._block.read()
            if ints[_I["done"]] == 2 or not self._proc.is_alive():
                self._proc.join(1.0)
                raise RobotError(
                    f"real-time executor process failed to start (exit code {self._proc.exitcode}); see its log"
                )
            ready = ints[_I["ready"]] == 1 and ints[_I["session"]] == self._session and ints[_I["done"]] == 0
            if ready and ints[_I["ticks"]] >= 1:  # set up, and this session's loop has ticked
                break
            if time.monotonic() > deadline:
                self._proc.kill()
                raise RobotError(f"real-time executor process not ready after {self.realtime.start_timeout_s:.0f} s")
            time.sleep(0.002 if self._session > 1 else 0.01)
        log.info(
            "real-time executor process %d session %d running (CPU %s, %s)",
            self._proc.pid,
            self._session,
            int(ints[_I["cpu"]]) if ints[_I["cpu"]] >= 0 else "unpinned",
            "SCHED_FIFO" if ints[_I["fifo"]] else "normal priority",
        )

    def request_stop(self) -> None:
        """Ask the loop to stop (ruckig stop from the plan's state, then the session ends)."""
        self._stopping = True
        if self._conn is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send_bytes(b"S")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop within the limits and end the session (and, unless ``keep_alive``, the process: joined, killed if
        it does not end in ``timeout_s``); its final counters stay readable by :meth:`stats`."""
        proc = self._proc
        if proc is None:
            return
        self.request_stop()
        deadline = time.monotonic() + timeout_s
        while proc.is_alive() and self._block is not None and time.monotonic() < deadline:
            if self._block.read()[0][_I["done"]] != 0:
                break
            time.sleep(0.005)
        if self._block is not None:
            try:
                self._final = self._block.read()
            except ShapeError:
                self._final = (self._block.ints.copy(), self._block.floats.copy())
        if self.relay is not None:
            self.relay.drain()  # the session's last set-points reach the robot now (not after, e.g., a world reset)
        if not (self.keep_alive and proc.is_alive() and self._final is not None and self._final[0][_I["done"]] == 1):
            self._end_process(max(deadline - time.monotonic(), 1.0))

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the session if one runs and end the process for good (idempotent)."""
        if self._proc is None:
            return
        if self._block is not None and self._block.read()[0][_I["done"]] == 0:
            keep, self.keep_alive = self.keep_alive, False
            try:
                self.stop(timeout_s)
            finally:
                self.keep_alive = keep
        else:
            self._end_process(timeout_s)

    def _end_process(self, timeout_s: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if self._conn is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send_bytes(b"Q")
        proc.join(timeout_s)
        if proc.is_alive():
            log.error("real-time executor process did not stop within %.1f s; killing it", timeout_s)
            proc.kill()
            proc.join(1.0)
        if self._block is not None and self._final is None:
            try:
                self._final = self._block.read()
            except ShapeError:
                self._final = (self._block.ints.copy(), self._block.floats.copy())
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._proc = None
        self._close_shared()

    def _close_shared(self) -> None:
        for shared in (self._block, self._slot):
            if shared is not None:
                shared.close()
        self._block = self._slot = None

    def __del__(self) -> None:  # never leave a real-time process or shared memory behind
        try:
            if self._proc is not None and self._proc.is_alive():
                self._proc.kill()
            self._close_shared()
        except Exception:
            pass

    @property
    def pid(self) -> int | None:
        """The real-time process's pid (the last one, after it ended), or None before the first start."""
        return self._last_pid

    # ---------------------------------------------------------------------------------------------- reading
    def _read(self) -> tuple[np.ndarray, np.ndarray]:
        if self._block is not None:
            return self._block.read()
        if self._final is not None:
            return self._final
        return np.zeros(len(_INT_FIELDS), dtype=np.int64), np.zeros(_n_floats(self._n, self.realtime.lateness_window))

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._joint_names

    @property
    def limits(self) -> JointLimits:
        return self._limits

    @property
    def planner(self) -> MotionPlanner:
        return self._intake

    @property
    def state(self) -> ExecutorState:
        ints, _ = self._read()
        if self._final is not None or ints[_I["done"]] != 0:
            return ExecutorState.STOPPED
        return STATE_BY_CODE[int(ints[_I["state"]])]

    @property
    def commanded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        ints, floats = self._read()
        if ints[_I["ticks"]] == 0:
            return None
        n = self._n
        return floats[:n].copy(), floats[n : 2 * n].copy(), floats[2 * n : 3 * n].copy()

    @property
    def at_rest(self) -> bool:
        cmd = self.commanded
        return cmd is not None and not (np.any(cmd[1] != 0.0) or np.any(cmd[2] != 0.0))

    @property
    def active_plan(self) -> MotionPlan | None:
        """The plan the real-time loop follows (as it last published it)."""
        ints, _ = self._read()
        active_id, version = int(ints[_I["active_id"]]), int(ints[_I["active_version"]])
        cached_id, cached_version, cached = self._active_cache
        if (active_id, version) == (cached_id, cached_version) and (active_id != _ACTIVE_OWN or cached is not None):
            return cached
        plan: MotionPlan | None = None
        if active_id >= 0:
            plan = self._sent.get(active_id)
        elif active_id == _ACTIVE_OWN and self._slot is not None:
            try:
                _, data = self._slot.read()
                plan = MotionPlan.from_bytes(data)
            except ShapeError as exc:
                log.warning("could not read the real-time process's plan: %s", exc)
        self._active_cache = (active_id, version, plan)
        return plan

    # ----------------------------------------------------------------------------------------------- intake
    def _reject(self, reason: str, detail: str) -> bool:
        self._rejected_main[reason] = self._rejected_main.get(reason, 0) + 1
        log.warning("trajectory rejected (%s): %s", reason, detail)
        return False

    def set_plan(self, plan: MotionPlan) -> bool:
        """Send ``plan`` to the real-time loop (checked here first, like :meth:`Executor.set_plan`)."""
        stopping = self._stopping or self._conn is None
        refused = plan_refusal(plan, self._joint_names, self.clock.now_ns(), stopping)
        if refused is not None:
            return self._reject(*refused)
        t_planned = self.clock.now_ns()
        try:
            ready = self._ready_to_adopt(plan, t_planned)
            if ready is not plan and not self._arrives_in_time():
                # preparing it took longer than the margin (a loaded host): once more with the measured time
                self._handover_est_s = max(self._handover_est_s, (self.clock.now_ns() - t_planned) * 1e-9)
                t_planned = self.clock.now_ns()
                self._prepared -= 1  # counted once: the first preparation is dropped
                ready = self._ready_to_adopt(plan, t_planned)
            plan = ready
        except MotionError as exc:  # sent as it is: the loop joins it at pick-up
            log.warning("no hand-over prepared for the real-time loop (%s); it joins the plan itself", exc)
        plan_id = self._next_id
        self._next_id += 1
        self._sent[plan_id] = plan
        for old in [k for k in self._sent if k < plan_id - 16]:
            del self._sent[old]
        try:
            self._conn.send_bytes(b"P" + struct.pack("<q", plan_id) + plan.to_bytes())
        except (BrokenPipeError, OSError) as exc:
            return self._reject("stopping", f"the real-time executor process is gone ({exc})")
        took_s = max(self.clock.now_ns() - t_planned, 0) * 1e-9
        # a slower hand-over raises the estimate at once, a faster one lowers it gradually
        self._handover_est_s = max(took_s, 0.8 * self._handover_est_s + 0.2 * took_s)
        return True

    def _arrives_in_time(self) -> bool:
        """Whether a prepared plan sent now still reaches the loop within its kept prefix (a period to spare)."""
        return self.clock.now_ns() + self.period_ns < self._freeze_ns

    def _ready_to_adopt(self, plan: MotionPlan, now_ns: int) -> MotionPlan:
        """``plan`` as the loop can adopt it without computing anything: unchanged when it already continues what
        the loop commands now (a splice); else what the loop follows now (its plan, or the posture it holds) kept
        up to the hand-over time, then a ruckig join onto ``plan`` from there (``RealtimeConfig.handover_s``)."""
        commanded = self.commanded
        if commanded is None:
            return plan  # the loop has not ticked yet: it joins the plan from the posture it finds
        active = self.active_plan
        keep_from = now_ns - 2 * self.period_ns  # the loop's next tick is after this
        if active is None:
            active = MotionPlan.hold(self._joint_names, commanded[0], keep_from)  # at rest where it is
        keep_from = max(keep_from, active.start_ns)

        def commands_at(t_ns: int) -> JointState:  # what the loop commands at t_ns without a new plan
            return JointState.at_rest(active.end_state.q) if t_ns >= active.end_ns else active.sample(t_ns)

        if plan.start_ns <= now_ns and plan.sample(now_ns).close_to(commands_at(now_ns)):
            return plan
        freeze = self._freeze_ns = now_ns + round((self.realtime.handover_s + self._handover_est_s) * 1e9)
        kept = active.after(keep_from)  # at or after its end: a short hold at its end state
        if kept.end_ns > freeze:
            kept = kept.until(freeze)
        elif kept.end_ns < freeze:  # plans end at rest: the loop holds the end posture until then
            rest = MotionPlan.hold(self._joint_names, kept.end_state.q, kept.end_ns, (freeze - kept.end_ns) * 1e-9)
            kept = kept.then(rest)
        self._prepared += 1
        return self._intake.splice(kept, plan)

    def set_trajectory(self, traj: JointTrajectory, policy_end_ns: int | None = None) -> bool:
        """Time waypoints within the limits and send them (see :meth:`Executor.set_trajectory`)."""
        if not isinstance(traj, JointTrajectory):
            return self._reject("type", f"expected a JointTrajectory, got {type(traj).__name__}")
        if tuple(traj.joint_names) != self._joint_names:
            return self._reject("joints", f"joint names {traj.joint_names} are not the robot's {self._joint_names}")
        if int(traj.t_ns[-1]) < self.clock.now_ns():
            return self._reject("stale", "its last point is in the past")
        try:
            plan = self._intake.chunk_plan(traj, policy_end_ns)
        except MotionError as exc:
            return self._reject("motion", str(exc))
        return self.set_plan(plan)

    # ------------------------------------------------------------------------------------------------ stats
    def realtime_status(self) -> dict[str, Any]:
        """pid, the CPU it is pinned to (-1: none) and whether it runs with SCHED_FIFO."""
        ints, _ = self._read()
        return {"pid": self.pid, "cpu": int(ints[_I["cpu"]]), "sched_fifo": bool(ints[_I["fifo"]])}

    def stats(self) -> dict[str, Any]:
        """Like :meth:`Executor.stats`, from the real-time process's shared state, plus ``realtime`` and
        ``handovers_prepared`` (plans joined in this process ahead of the loop, which then adopts them)."""
        ints, floats = self._read()
        n = self._n

        def i(name: str) -> int:
            return int(ints[_I[name]])

        rejected = {r: i(f"rejected_{r}") for r in _REJECT_REASONS if i(f"rejected_{r}")}
        for reason, count in self._rejected_main.items():
            rejected[reason] = rejected.get(reason, 0) + count
        safety = {k: i(f"safety_{k}") for k in INTERVENTION_KINDS}
        safety["calls"] = i("safety_calls")
        safety["total"] = sum(safety[k] for k in INTERVENTION_KINDS)
        safety["catch_up_ticks"] = i("safety_catch_up")
        out: dict[str, Any] = {
            "state": self.state.value,
            "ticks": i("ticks"),
            "skipped_ticks": i("skipped"),
            "overruns": i("overruns"),
            "holds": i("holds"),
            "extensions": i("extensions"),
            "joins": i("joins"),
            "adopted": i("adopted"),
            "handovers_prepared": self._prepared,
            "trajectories_accepted": i("accepted"),
            "trajectories_superseded": i("superseded"),
            "trajectories_rejected": rejected,
            "command_errors": i("command_errors"),
            "prefilter_peak_ratio": {
                "velocity": round(float(floats[3 * n]), 6),
                "acceleration": round(float(floats[3 * n + 1]), 6),
                "jerk": round(float(floats[3 * n + 2]), 6),
            },
            "plan_deviation_max_mrad": round(float(floats[3 * n + 3]) * 1e3, 6),
            "faults": {"safety_interventions": safety["total"], "overruns": i("overruns")},
            "safety": safety,
            "realtime": {"pid": self.pid, "cpu": i("cpu"), "sched_fifo": bool(i("fifo"))},
        }
        t0, t1, ticks = i("loop_t0_ns"), i("loop_last_ns"), i("loop_ticks")
        if t1 > t0 > 0:
            out["achieved_rate_hz"] = round(ticks / ((t1 - t0) / 1e9), 2)
        w = self.realtime.lateness_window
        count = min(i("lateness_n"), w)
        if count:
            samples = floats[3 * n + 4 : 3 * n + 4 + count]
            out.update(latency_stats(samples / 1e3, prefix="lateness_"))
            out["lateness_n"] = count
        return out

    def wait(self, predicate: Callable[[ProcessExecutor], bool], timeout_s: float, poll_s: float = 0.005) -> bool:
        """Poll ``predicate(self)`` until true or ``timeout_s`` passes; return whether it became true."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(poll_s)
        return bool(predicate(self))
