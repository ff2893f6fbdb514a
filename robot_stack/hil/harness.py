"""Run a scenario on the full stack and inject its faults on schedule.

The stack under test is the demo's: a scenario names a stack preset (``stack:``, default ``demo``) and the harness
builds it with :func:`robot_stack.stack.build_stack`, exactly as ``robot-stack demo`` does, with the scenario's
settings (rate, watchdog, deadlines, workspace box) and its fault injectors put in: the camera wrapped by
:class:`~robot_stack.hil.faults.FaultyCamera`, the robot by the command audit
(:class:`~robot_stack.hil.audit.RecordingRobot`), the client (:class:`~robot_stack.hil.audit.TimedClient`)
talking through a :class:`~robot_stack.hil.faults.NetworkProxy` to a policy server subprocess that injects answer
faults (:class:`~robot_stack.hil.server.FaultInjectingService`). The loop is
:func:`robot_stack.stack.run_live_episode`, on the real monotonic clock.

Every loop here is bounded in count and time: the policy loop by ``duration_s`` and a step cap, waits by
timeouts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.clock import MonotonicClock
from robot_stack.cycle import CycleResult
from robot_stack.errors import ConfigError, TransportError
from robot_stack.hil.audit import RecordingRobot, TimedClient, WarningCounter
from robot_stack.hil.faults import FaultyCamera, NetworkProxy, ServerProcess, apply_push
from robot_stack.hil.metrics import compute_metrics, evaluate
from robot_stack.hil.report import HilReport, write_report
from robot_stack.hil.scenario import FaultSpec, Scenario
from robot_stack.stack import EpisodeStack, Stack, StackConfig, build_stack, load_stack_config, run_live_episode
from robot_stack.stack.build import terminate_on_signals
from robot_stack.viewer.stack_view import StackView

log = logging.getLogger("robot_stack.hil")

__all__ = ["RunRecord", "Window", "run_scenario", "scenario_stack_config"]


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
        robot_model: the arm the scenario ran on (its kinematics for the workspace figures).
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
    robot_model: str = "panda"
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


def scenario_stack_config(scenario: Scenario, manifest: str | Path | None = None) -> StackConfig:
    """The stack a scenario runs: its preset (``stack:``, default the demo's) for the scenario's arm
    (:meth:`Scenario.for_robot`; else the preset's) with the scenario's rate (else the arm's), watchdog, deadlines,
    episode length and workspace box (else the arm's); ``manifest`` replaces the preset's policy."""
    overrides = [
        f"control.watchdog_s={scenario.watchdog_s}",
        f"policy.timeout_s={max(2.0, scenario.client_timeout_s)}",
        f"policy.request_timeout_s={scenario.client_timeout_s}",
        f"task.max_duration_s={scenario.duration_s}",
    ]
    if scenario.rate_hz is not None:
        overrides.append(f"control.rate_hz={scenario.rate_hz}")
    if scenario.workspace is not None:
        overrides += [f"control.workspace_lower={list(scenario.workspace[0])}"]
        overrides += [f"control.workspace_upper={list(scenario.workspace[1])}"]
    if manifest is not None:
        overrides.append(f"policy.manifest={manifest}")
    config = load_stack_config(scenario.stack_path(), overrides, robot=scenario.robot)
    return config.with_overrides([f"robot.robot_id=hil-{config.robot.model}-0"])


#: Policy fault modes that corrupt a continuous ``ee_delta_xyz`` chunk (the ``actions`` output).
_ACTION_FAULTS = ("nan", "inf", "out_of_range", "jump", "reach")


def check_applicable(scenario: Scenario, config: StackConfig) -> None:
    """Raise ConfigError when a fault of ``scenario`` cannot act on the stack ``config`` serves: a policy-output
    fault (:data:`_ACTION_FAULTS`) needs a continuous ``ee_delta_xyz`` policy, and would otherwise change nothing."""
    from robot_stack.policy.manifest import PolicyManifest

    modes = sorted({str(f.params["mode"]) for f in scenario.faults if f.kind == "policy"} & set(_ACTION_FAULTS))
    if not modes:
        return
    manifest = PolicyManifest.load(config.policy.manifest_path())
    if "actions" not in {o.name for o in manifest.outputs}:
        raise ConfigError(
            f"scenario {scenario.name}: policy fault(s) {modes} corrupt the 'actions' chunk of a continuous policy, "
            "but "
            f"{manifest.model_id} outputs {[o.name for o in manifest.outputs]}; run it with --manifest <a continuous "
            "ee_delta_xyz policy of this arm>"
        )


def run_scenario(
    scenario: Scenario,
    report_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    view: Any = None,
) -> HilReport:
    """Run ``scenario`` on the full stack; return a :class:`~robot_stack.hil.report.HilReport`.

    With ``report_dir``, also write ``<name>.json`` and ``<name>.png`` there; with ``view`` (a
    :class:`~robot_stack.viewer.live.LiveView`), show every cycle, hold and refused frame live.
    """
    config = scenario_stack_config(scenario, manifest)
    check_applicable(scenario, config)
    record = RunRecord(scenario, robot_model=config.robot.model)
    server = ServerProcess(config.policy.manifest_path(), clock_skew_s=scenario.clock_skew_s)
    proxy: NetworkProxy | None = None
    cameras: list[FaultyCamera] = []
    with WarningCounter() as warnings, terminate_on_signals():
        try:
            server.start()
            assert server.endpoint is not None
            proxy = NetworkProxy(server.endpoint, seed=scenario.seed)
            clock = MonotonicClock()

            def audit(robot: Any) -> RecordingRobot:
                return RecordingRobot(robot, clock.now_ns, 1.0 / config.control_rate_hz)

            def faulty(camera: Any) -> FaultyCamera:
                cameras.append(FaultyCamera(camera))
                return cameras[-1]

            with build_stack(
                config,
                clock=clock,
                endpoint=proxy.endpoint,
                robot_wrapper=audit,
                camera_wrapper=faulty,
                client_factory=TimedClient,
            ) as stack:
                shown = StackView(view, stack) if view is not None else None
                _run_episodes(scenario, stack, server, proxy, cameras[0], record, shown)
                _final_clock_sync(scenario, stack.client, server, record)
                record.extra = {
                    "proxy": dict(proxy.counts),
                    "camera_injected": dict(cameras[0].injected),
                    "server_starts": server.starts,
                    "client_timeouts": stack.client.timeouts,
                    "world_skipped_s": stack.world.stats.skipped_s,
                }
                record.robot = stack.robot
                record.calls = list(stack.client.calls)
        finally:
            for closer in (proxy.close if proxy else None, server.stop):
                if closer is not None:
                    try:
                        closer()
                    except Exception:  # cleanup must reach every component
                        log.exception("HIL cleanup step failed")
        record.extra["warnings"] = dict(warnings.counts)
    metrics = compute_metrics(record)
    checks = evaluate(scenario, metrics)
    report = HilReport(scenario.name, scenario.description, metrics, tuple(checks), record)
    if report_dir is not None:
        write_report(report, Path(report_dir))
    return report


def _run_episodes(
    scenario: Scenario,
    stack: Stack,
    server: ServerProcess,
    proxy: NetworkProxy,
    camera: FaultyCamera,
    record: RunRecord,
    shown: StackView | None = None,
) -> None:
    """Every episode of the scenario, back to back, with the same fault schedule."""
    from robot_stack.sim.task import ReachTouchTask

    record.policy_dt_s = float(stack.metadata.get("dt_s") or 0.1)
    record.horizon = int(stack.metadata.get("horizon") or 8)
    record.guard_max_age_s = stack.config.cycle.max_frame_age_s
    task = ReachTouchTask(stack.world, max_duration_s=scenario.duration_s)
    injector = _Injector(scenario.faults, proxy, server, camera, stack.world)
    robot = stack.robot
    assert isinstance(robot, RecordingRobot)
    for ep in range(scenario.episodes):
        episode = stack.new_episode()  # first: it may spawn the real-time process (not on the task's clock)
        task.reset(scenario.seed + ep)
        robot.reset_history()
        robot.executor = episode.executor
        robot.monitor = task.is_success  # latch touches at the state-read rate, not only per policy cycle
        t0 = stack.clock.now_ns()
        if ep == 0:
            record.t0_ns = t0
        if shown is not None:
            shown.start_episode(episode, task.cube_top_center())
        _run_episode(scenario, ep, t0, round(stack.period_s * 1e9), episode, task, injector, record, stack.clock, shown)
        record.executor.append(episode.executor.stats())
        record.episodes.append(
            {
                "episode": ep,
                "seed": scenario.seed + ep,
                "success": bool(task.is_success()),
                "time_to_success_s": task.time_to_success_s,
                "duration_s": round(task.elapsed_s(), 3),
                "outcomes": dict(episode.cycle.outcomes),
                "recoveries": episode.cycle.recoveries,
                "final_distance_m": round(task.tcp_distance_m(), 4),
            }
        )
        log.debug("HIL %s episode %d: %s", scenario.name, ep, record.episodes[-1])


def _final_clock_sync(scenario: Scenario, client: TimedClient, server: ServerProcess, record: RunRecord) -> None:
    """Measure the server clock offset once the control loop is idle, as a deployment re-syncs.

    The estimate comes from the lowest-delay sample of the client's last calls; during an episode those are
    image-carrying requests whose upload is slower than their reply (an asymmetry that biases the estimate by
    milliseconds on a loaded host): small symmetric pings once the loop is idle measure it properly.
    """
    if server._restart is not None:
        server._restart.join(60)
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


def _run_episode(
    scenario: Scenario,
    episode: int,
    t0: int,
    period_ns: int,
    stack: EpisodeStack,
    task: Any,
    injector: _Injector,
    record: RunRecord,
    clock: Any,
    shown: StackView | None = None,
) -> None:
    """The policy loop of one episode, with fault switching; ends at ``duration_s`` or once the task succeeded
    after every fault window closed and a fresh trajectory was accepted."""
    faults_end = scenario.faults_end_s
    state = {"recovered": faults_end == 0.0, "last_t_obs": 0}
    cycle = stack.cycle

    def done(step: int, now: int) -> bool:
        # sample the task every cycle, also inside fault windows: a touch is an event that the task latches only
        # when it is asked (the executor-rate monitor on the robot samples it between cycles too)
        succeeded = task.is_success()
        t_s = (now - t0) / 1e9
        return t_s >= scenario.duration_s or (state["recovered"] and not injector.pending() and succeeded)

    def before(step: int, now: int) -> None:
        injector.update((now - t0) / 1e9, now, episode, record)

    def after(step: int, result: CycleResult) -> None:
        t_done = clock.now_ns()
        record.cycles.append((t_done, result.outcome, episode))
        if shown is not None:
            shown.after_cycle(step, result)
        if not (result.ok and result.observation is not None):
            return
        obs = result.observation
        # the call that carried this observation (with pipelining the next request may already be back)
        call = next(c for c in reversed(cycle.client.calls) if c.t_obs_ns == obs.t_obs_ns)
        xyz = obs.cameras[0].xyz_base
        valid = float(np.count_nonzero(np.isfinite(xyz[::8, ::8, 2]))) / xyz[::8, ::8, 2].size
        age_ms = (call.t_send_ns - obs.t_obs_ns) / 1e6
        repeated = obs.t_obs_ns <= state["last_t_obs"]
        record.fresh.append((obs.t_obs_ns, -1.0 if repeated else age_ms, valid))
        state["last_t_obs"] = obs.t_obs_ns
        if (t_done - t0) / 1e9 >= faults_end and not injector.pending():
            state["recovered"] = True

    def on_exit() -> None:
        injector.clear(clock.now_ns(), episode, record)
        cycle.robot.executor = None  # the stop ramp is recorded as "stopped", not as a watchdog hold
        cycle.robot.stopped_from_ns = clock.now_ns()
        cycle.robot.monitor = None

    run_live_episode(
        stack,
        clock,
        period_ns,
        done=done,
        max_steps=int(scenario.duration_s * 1e9 / period_ns) * 2 + 10,
        before_cycle=before,
        after_cycle=after,
        on_exit=on_exit,
        meta=lambda step: {"episode": episode, "step": step},
    )
