"""Run a scenario on the full stack and inject its faults on schedule.

The stack under test is the demo's, on the real monotonic clock: SimCamera → DepthProjector → PolicyClient
──ZeroMQ──► :class:`~robot_stack.hil.faults.NetworkProxy` ──► policy server subprocess (ONNX Runtime, the shipped
``reach-touch-v1`` model, wrapped by :class:`~robot_stack.hil.server.FaultInjectingService`) → EeDeltaXyzDecoder →
Executor thread (500 Hz, SafetyFilter, watchdog) → :class:`~robot_stack.hil.recording.RecordingRobot` → SimRobot.
The robot-side loop is :class:`~robot_stack.runtime.PolicyCycle`, exactly as in ``robot-stack demo``.

Every loop here is bounded in count and time: the policy loop by ``duration_s`` and a step cap, waits by
timeouts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.hil.faults import FaultyCamera, NetworkProxy, ServerProcess, apply_push
from robot_stack.hil.recording import RecordingRobot, TimedClient, WarningCounter
from robot_stack.hil.scenario import FaultSpec, Scenario

log = logging.getLogger("robot_stack.hil")

__all__ = ["WORKSPACE_MARGIN_M", "RunRecord", "Window", "run_scenario"]

#: The safety filter brakes the commanded TCP this far (m) inside the workspace box: the measured TCP lags the
#: commands (position-controller tracking, contact), so braking on the face itself lets the real hand pass it.
WORKSPACE_MARGIN_M = 0.01


@dataclass(frozen=True)
class Window:
    """A fault window on the robot clock (ns) of one episode."""

    label: str
    kind: str
    episode: int
    start_ns: int
    end_ns: int


@dataclass
class RunRecord:
    """Everything one scenario run recorded (the input of :func:`robot_stack.hil.metrics.compute_metrics`).

    Attributes:
        t0_ns: robot clock at the start of the first episode (plots use it as zero).
        windows: fault windows actually applied (start/end when the harness switched them).
        cycles: (t_ns, outcome, episode) per policy cycle.
        fresh: (t_obs_ns, age_at_request_ms, valid_xyz_fraction) of every observation a trajectory came from.
        episodes: per-episode outcome dicts.
        executor: per-episode ``Executor.stats()``.
        robot: the auditing robot wrapper (commands, measured states, unsafe counts).
        calls: the client's call records.
        clock: injected/measured clock offset figures.
        extra: counters from the injectors (proxy, camera, server restarts), world stats, warnings.
    """

    scenario: Scenario
    t0_ns: int = 0
    windows: list[Window] = field(default_factory=list)
    cycles: list[tuple[int, str, int]] = field(default_factory=list)
    fresh: list[tuple[int, float, float]] = field(default_factory=list)
    episodes: list[dict[str, Any]] = field(default_factory=list)
    executor: list[dict[str, Any]] = field(default_factory=list)
    robot: RecordingRobot | None = None
    calls: list[Any] = field(default_factory=list)
    clock: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    policy_dt_s: float = 0.1
    horizon: int = 8
    guard_max_age_s: float = 0.25


class _Injector:
    """Switches each fault of a scenario on and off as episode time passes.

    It is updated once per policy cycle, so a window switches on at the first update at or after its start; it then
    lasts its full duration from there (a slow cycle delays a window, never shortens or skips it). Each window is
    applied once per episode.
    """

    def __init__(
        self,
        faults: tuple[FaultSpec, ...],
        proxy: NetworkProxy,
        server: ServerProcess,
        camera: FaultyCamera,
        world: Any,
    ) -> None:
        self.faults = [f for f in faults if f.kind != "clock_skew"]
        self.proxy, self.server, self.camera, self.world = proxy, server, camera, world
        self.active: dict[int, int] = {}  # fault index -> start time ns
        self.applied: set[int] = set()  # windows already run this episode

    def _switch(self, fault: FaultSpec, on: bool) -> None:
        p = fault.params
        if fault.kind == "network":
            if on:
                self.proxy.set(float(p["delay_ms"]), float(p["jitter_ms"]), float(p["loss"]))
            else:
                self.proxy.set()
        elif fault.kind == "partition":
            self.proxy.set(partition=on)
        elif fault.kind == "server_kill":
            if on:
                self.server.kill()
            else:
                self.server.restart_in_background()
        elif fault.kind == "camera":
            self.camera.set_mode(p["mode"] if on else None, float(p["late_ms"]))
        elif fault.kind == "policy":
            self.server.set_faults(dict(p) if on else {})
        elif fault.kind == "push":
            apply_push(self.world, str(p["body"]), p["force_n"] if on else None)
        log.info("fault %s %s", fault.label, "ON" if on else "off")

    def update(self, t_s: float, now_ns: int, episode: int, record: RunRecord) -> None:
        for i, fault in enumerate(self.faults):
            if i in self.active:
                if (now_ns - self.active[i]) / 1e9 >= fault.end_s - fault.start_s:
                    self._switch(fault, False)
                    record.windows.append(Window(fault.label, fault.kind, episode, self.active.pop(i), now_ns))
            elif i not in self.applied and t_s >= fault.start_s:
                if t_s > fault.end_s:
                    log.warning(
                        "fault %s switched on %.0f ms late (slow cycle)", fault.label, (t_s - fault.start_s) * 1e3
                    )
                self._switch(fault, True)
                self.active[i] = now_ns
                self.applied.add(i)

    def pending(self) -> bool:
        """Whether a window is still on or has yet to run this episode."""
        return bool(self.active) or len(self.applied) < len(self.faults)

    def clear(self, now_ns: int, episode: int, record: RunRecord) -> None:
        for i in list(self.active):
            fault = self.faults[i]
            self._switch(fault, False)
            record.windows.append(Window(fault.label, fault.kind, episode, self.active.pop(i), now_ns))
        self.applied.clear()


def run_scenario(
    scenario: Scenario,
    report_dir: str | Path | None = None,
    manifest: str | Path | None = None,
) -> Any:
    """Run ``scenario`` on the full stack; return a :class:`~robot_stack.hil.report.HilReport`.

    With ``report_dir``, also write ``<name>.json`` and ``<name>.png`` there.
    """
    from robot_stack.calibration.store import load_calibration
    from robot_stack.clock import MonotonicClock
    from robot_stack.control.executor import Executor
    from robot_stack.control.ik import panda_ik
    from robot_stack.control.safety import SafetyFilter, WorkspaceBox
    from robot_stack.control.scheduler import ChunkScheduler, SchedulerConfig
    from robot_stack.decoders.ee_delta import EeDeltaXyzDecoder
    from robot_stack.decoders.geometry import ReachPolicy, ReachStats
    from robot_stack.demo import DEFAULT_MANIFEST
    from robot_stack.errors import TransportError
    from robot_stack.hil.metrics import compute_metrics, evaluate
    from robot_stack.hil.report import HilReport, write_report
    from robot_stack.robots.panda import HOME_Q
    from robot_stack.runtime import ObservationGuard, PolicyCycle, RecoveryConfig
    from robot_stack.sim.camera import SimCamera
    from robot_stack.sim.robot import SimRobot
    from robot_stack.sim.task import ReachTouchTask
    from robot_stack.sim.world import SimWorld

    os.environ.setdefault("LP_NUM_THREADS", "1")  # software renderer: leave the cores to the control loop
    record = RunRecord(scenario)
    server = ServerProcess(Path(manifest) if manifest else DEFAULT_MANIFEST, clock_skew_s=scenario.clock_skew_s)
    proxy: NetworkProxy | None = None
    client: TimedClient | None = None
    camera: FaultyCamera | None = None
    with WarningCounter() as warnings:
        try:
            server.start()
            assert server.endpoint is not None
            proxy = NetworkProxy(server.endpoint, seed=scenario.seed)
            clock = MonotonicClock()
            world = SimWorld(clock=clock)
            robot = RecordingRobot(SimRobot(world), clock.now_ns, 1.0 / scenario.rate_hz)
            camera = FaultyCamera(SimCamera(world, camera_id="front"))
            projector = load_calibration("sim_tabletop", "front").projector()
            # a real stack's decoding: restart IK from the neutral posture when the warm start fails, accept a
            # best-effort residual of <= 5 mm, clamp targets up to 5 cm beyond reach onto the reachable set and
            # drop the steps that are still unreachable, raise targets below 15 mm over the table top (all logged)
            reach_stats = ReachStats()
            reach = ReachPolicy(
                HOME_Q,
                best_effort_m=0.005,
                best_effort_rad=0.01,
                clamp_m=0.05,
                drop_unreachable=True,
                floor_z_m=0.015,
                stats=reach_stats,
            )
            decoder = EeDeltaXyzDecoder(orientation="down", reach=reach)
            task = ReachTouchTask(world, max_duration_s=scenario.duration_s)
            client = TimedClient(proxy.endpoint, robot_id="hil-panda-0", timeout_s=max(2.0, scenario.client_timeout_s))
            camera.start()
            camera.read()  # the first render creates the GL context and would arrive stale
            meta = client.metadata()
            record.policy_dt_s = float(meta.get("dt_s") or 0.1)
            record.horizon = int(meta.get("horizon") or 8)
            period_ns = round(1e9 / float(meta.get("control_rate_hz") or 10.0))
            client.sync_clock()
            box = None
            fk = None
            if scenario.workspace is not None:
                box = WorkspaceBox(np.array(scenario.workspace[0]), np.array(scenario.workspace[1]))
                fk = panda_ik().fk_xyz  # its own model/data: the executor thread must not share the decoder's
            injector = _Injector(scenario.faults, proxy, server, camera, world)
            guard = ObservationGuard()
            record.guard_max_age_s = guard.config.max_age_s
            for ep in range(scenario.episodes):
                task.reset(scenario.seed + ep)
                robot.reset_history()
                safety = SafetyFilter(robot.limits, workspace=box, fk_xyz=fk, workspace_margin_m=WORKSPACE_MARGIN_M)
                executor = Executor(
                    robot, clock, rate_hz=scenario.rate_hz, safety=safety, watchdog_timeout_s=scenario.watchdog_s
                )
                robot.executor = executor
                robot.monitor = task.is_success  # latch touches at the state-read rate, not only per policy cycle
                # latency compensation + splice blending, exactly as ``robot-stack demo`` (default --blend splice)
                # late chunks: the scheduler extends the last one (coming to rest along its motion) up to the watchdog
                # deadline, so a chunk that arrives before the deadline is spliced in without a stop; beyond it, hold
                extend_s = scenario.watchdog_s
                scheduler = ChunkScheduler(executor, SchedulerConfig(mode="splice", extend_s=extend_s))
                cycle = PolicyCycle(
                    [(camera, projector)],
                    robot,
                    client,
                    decoder,
                    executor,
                    clock,
                    task=task.instruction,
                    guard=guard,
                    timeout_s=scenario.client_timeout_s,
                    scheduler=scheduler,
                    # slow model or network: capture the next observation while the request is in flight
                    pipeline_period_s=period_ns / 1e9,
                    # a policy that only pushes into a limit (floor, reach, box) is taken back to its start posture
                    # (15 cycles or 1.5 s in a row: on a loaded host cycles slow down, the arm is stuck all the same)
                    recovery=RecoveryConfig(HOME_Q, reach_stats=reach_stats, blocked_s=1.5),
                )
                t0 = clock.now_ns()
                if ep == 0:
                    record.t0_ns = t0
                _run_episode(scenario, ep, t0, period_ns, cycle, executor, task, injector, record, clock)
                record.executor.append(executor.stats())
                record.episodes.append(
                    {
                        "episode": ep,
                        "seed": scenario.seed + ep,
                        "success": bool(task.is_success()),
                        "time_to_success_s": task.time_to_success_s,
                        "duration_s": round(task.elapsed_s(), 3),
                        "outcomes": dict(cycle.outcomes),
                        "recoveries": cycle.recoveries,
                        "final_distance_m": round(task.tcp_distance_m(), 4),
                    }
                )
                log.info("HIL %s episode %d: %s", scenario.name, ep, record.episodes[-1])
            if server._restart is not None:
                server._restart.join(60)
            # the offset estimate comes from the lowest-delay sample of the client's last calls; during an episode
            # those are image-carrying requests whose upload is slower than their reply (an asymmetry that biases
            # the estimate by milliseconds on a loaded host): measure it the way a deployment re-syncs, with small
            # symmetric pings once the control loop is idle
            try:
                client.sync_clock(16)
            except TransportError as exc:
                log.warning("final clock sync failed (%s); the offset measured during the run is reported", exc)
            record.clock = {
                "injected_offset_ms": scenario.clock_skew_s * 1e3,
                "measured_offset_ms": (client.clock_offset_ns or 0) / 1e6,
                "uncertainty_ms": (client.clock_offset_uncertainty_ns or 0) / 1e6,
                "method": server.skew_method,
            }
            record.extra = {
                "proxy": dict(proxy.counts),
                "camera_injected": dict(camera.injected),
                "server_starts": server.starts,
                "client_timeouts": client.timeouts,
                "world_skipped_s": world.stats.skipped_s,
            }
        finally:
            for closer in (
                client.close if client else None,
                camera.stop if camera else None,
                proxy.close if proxy else None,
                server.stop,
            ):
                if closer is not None:
                    try:
                        closer()
                    except Exception:  # cleanup must reach every component
                        log.exception("HIL cleanup step failed")
        record.robot = robot
        record.calls = list(client.calls)
        record.extra["warnings"] = dict(warnings.counts)
    metrics = compute_metrics(record)
    checks = evaluate(scenario, metrics)
    report = HilReport(scenario.name, scenario.description, metrics, tuple(checks), record)
    if report_dir is not None:
        write_report(report, Path(report_dir))
    return report


def _run_episode(
    scenario: Scenario,
    episode: int,
    t0: int,
    period_ns: int,
    cycle: Any,
    executor: Any,
    task: Any,
    injector: _Injector,
    record: RunRecord,
    clock: Any,
) -> None:
    """The 10 Hz policy loop of one episode, with fault switching; ends at ``duration_s`` or once the task
    succeeded after every fault window closed and a fresh trajectory was accepted."""
    faults_end = scenario.faults_end_s
    max_steps = int(scenario.duration_s * 1e9 / period_ns) * 2 + 10
    next_query = t0
    recovered = faults_end == 0.0
    last_t_obs = 0
    executor.start()
    try:
        for step in range(max_steps):
            now = clock.now_ns()
            t_s = (now - t0) / 1e9
            # sample the task every cycle, also inside fault windows: a touch is an event that the task latches
            # only when it is asked (the executor-rate monitor on the robot samples it between cycles too)
            succeeded = task.is_success()
            if t_s >= scenario.duration_s or (recovered and not injector.pending() and succeeded):
                break
            injector.update(t_s, now, episode, record)
            clock.sleep_until(next_query)
            next_query = max(next_query + period_ns, clock.now_ns())  # never burst to catch up
            result = cycle.run({"episode": episode, "step": step}, step)
            t_done = clock.now_ns()
            record.cycles.append((t_done, result.outcome, episode))
            if result.ok and result.observation is not None:
                obs = result.observation
                # the call that carried this observation (with pipelining the next request may already be back)
                call = next(c for c in reversed(cycle.client.calls) if c.t_obs_ns == obs.t_obs_ns)
                xyz = obs.cameras[0].xyz_base
                valid = float(np.count_nonzero(np.isfinite(xyz[::8, ::8, 2]))) / xyz[::8, ::8, 2].size
                age_ms = (call.t_send_ns - obs.t_obs_ns) / 1e6
                repeated = obs.t_obs_ns <= last_t_obs
                record.fresh.append((obs.t_obs_ns, -1.0 if repeated else age_ms, valid))
                last_t_obs = obs.t_obs_ns
                if (t_done - t0) / 1e9 >= faults_end and not injector.pending():
                    recovered = True
    finally:
        cycle.close()
        injector.clear(clock.now_ns(), episode, record)
        cycle.robot.executor = None  # the stop ramp below is recorded as "stopped", not as a watchdog hold
        cycle.robot.monitor = None
        executor.stop()
