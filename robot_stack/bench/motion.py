"""``robot-stack bench motion``: the demo stack under 0-500 ms of inference latency, audited before the safety filter.

The stack is the demo's (``demo`` preset, through :func:`robot_stack.stack.build_stack`; ``--set`` overrides reach
it, e.g. ``--set policy.action_head=binned --set control.blend=ensemble``), live on the real clock, with its
policy served by the hardware-in-the-loop server process (:class:`~robot_stack.hil.faults.ServerProcess`: the real
model service) whose ``slow`` fault adds the latency *at the server* (every answer ``L`` ms later). The robot is
wrapped by the HIL command audit (:class:`~robot_stack.hil.audit.RecordingRobot`), which receives every tick's
trace from the executor (thread or real-time process): the plan's own set-point before the filter, the state and
the filter's intervention count.

Per latency setting ``L`` (keys ``latency_<L>ms_*``), over ``episodes`` live episodes (cube seeds 0, 1, ...):

* ``success_rate``, ``time_to_success_s`` (median of the successful episodes);
* ``interventions_per_episode``: safety-filter interventions (each a logged fault event);
* ``chunks_per_episode``: decoded chunks the scheduler handed to the executor (how much policy motion the audit
  saw: on an overloaded host most observations are refused as stale before inference and the arm holds);
* ``max_jerk_ratio``, ``max_acceleration_ratio``, ``max_velocity_ratio``: the plan's set-points *before* the filter,
  divided differences over the real tick times, worst joint, over the limit;
* ``plan_vs_executed_p99_mrad`` / ``_max_mrad``: per tick, the largest joint difference between the plan's
  set-point and the one sent to the arm;
* ``unsafe_commands``: commands sent that broke a limit (the audit's own check after the filter);
* ``holds_per_episode`` (watchdog holds: the graceful answer to a policy too slow to cover the motion),
  ``extensions_per_episode`` (late chunks: the plan's come-to-rest was followed), ``round_trip_p50_ms``.

**Baseline, same run** (keys ``baseline_latency_<L>ms_*``): the hand-over before issue 13 -- each chunk at the
policy's own timing through its C1 spline, entered with a fixed 0.1 s quintic blend
(:class:`~robot_stack.bench.motion_baseline.FixedBlendScheduler`) -- on the same executor, server and seeds.

``done_when``: the issue-13 criteria checked on the figures: at every latency up to 300 ms 0 interventions,
pre-filter ratios <= 1, plan-vs-executed p99 <= 5 mrad and the 0 ms success rate; at 500 ms 0 unsafe commands.
``--quick``: 0 and 300 ms and the baseline at 300 ms, one episode each (a smoke test).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.bench.motion_baseline import FixedBlendScheduler
from robot_stack.bench.registry import register
from robot_stack.clock import MonotonicClock
from robot_stack.hil.audit import RecordingRobot, TimedClient
from robot_stack.hil.faults import ServerProcess
from robot_stack.hil.metrics import plan_audit
from robot_stack.stack import build_stack, load_stack_config, run_live_episode
from robot_stack.stack.build import terminate_on_signals

log = logging.getLogger("robot_stack.bench.motion")

__all__ = ["LATENCIES_MS", "run"]

#: Latency injected at the server per setting, ms.
LATENCIES_MS = (0, 100, 200, 300, 500)
#: Done-when thresholds of issue 13.
_MAX_RATIO = 1.0
_MAX_P99_MRAD = 5.0


def _episode(stack: Any, task: Any, robot: RecordingRobot, seed: int, baseline: bool) -> dict[str, Any]:
    """One live episode; its outcome and audit."""
    episode = stack.new_episode()  # first: it may spawn the real-time process (not on the task's clock)
    task.reset(seed)
    robot.reset_history()
    start = len(robot.t_ns)
    if baseline:
        episode.cycle.scheduler = FixedBlendScheduler(episode.executor)
    robot.executor = episode.executor
    robot.monitor = task.is_success
    period_ns = round(stack.period_s * 1e9)
    clock = stack.clock
    calls_before = len(stack.client.calls)

    def on_exit() -> None:
        robot.executor = None
        robot.stopped_from_ns = clock.now_ns()
        robot.monitor = None

    run_live_episode(
        episode,
        clock,
        period_ns,
        done=lambda step, now: task.is_done(),
        max_steps=int(stack.config.task.max_duration_s * 1e9 / period_ns) * 2 + 10,
        on_exit=on_exit,
        meta=lambda step: {"episode": seed, "step": step},
    )
    stats = episode.executor.stats()
    scheduler = episode.cycle.scheduler
    chunks = int(scheduler.stats()["accepted"]) if scheduler is not None else 0
    audit = plan_audit(_Slice(robot, start))
    rtt = [c.round_trip_ms for c in stack.client.calls[calls_before:]]
    return {
        "success": bool(task.is_success()),
        "time_to_success_s": task.time_to_success_s,
        "interventions": int(stats["safety"]["total"]),
        "chunks": chunks,
        "audit": audit,
        "holds": int(stats["holds"]),
        "extensions": int(stats["extensions"]),
        "rate_hz": stats.get("achieved_rate_hz"),
        "lateness_p99_ms": stats.get("lateness_p99_ms"),
        "rtt_ms": rtt,
    }


class _Slice:
    """The audit record of one episode (from command ``start`` on) in the shape :func:`plan_audit` reads."""

    def __init__(self, robot: RecordingRobot, start: int) -> None:
        self.limits = robot.limits
        self.t_ns = robot.t_ns[start:]
        self.q_cmd = robot.q_cmd[start:]
        self.q_plan = robot.q_plan[start:]
        self.interventions = robot.interventions[start:]
        self.episode_starts = [0]


def _summary(prefix: str, runs: list[dict[str, Any]], unsafe: int) -> dict[str, Any]:
    n = max(len(runs), 1)
    audits = [r["audit"] for r in runs]

    def worst(key: str) -> float | None:
        values = [a[key] for a in audits if a[key] is not None]
        return round(max(values), 4) if values else None

    times = [r["time_to_success_s"] for r in runs if r["success"] and r["time_to_success_s"] is not None]
    rtt = [x for r in runs for x in r["rtt_ms"]]
    rates = [r["rate_hz"] for r in runs if r["rate_hz"]]
    lateness = [r["lateness_p99_ms"] for r in runs if r["lateness_p99_ms"] is not None]
    return {
        f"{prefix}_episodes": len(runs),
        f"{prefix}_success_rate": round(sum(r["success"] for r in runs) / n, 4),
        f"{prefix}_time_to_success_s": round(float(np.median(times)), 3) if times else None,
        f"{prefix}_interventions_per_episode": round(sum(r["interventions"] for r in runs) / n, 3),
        f"{prefix}_chunks_per_episode": round(sum(r["chunks"] for r in runs) / n, 2),
        f"{prefix}_max_jerk_ratio": worst("prefilter_jerk_ratio"),
        f"{prefix}_max_acceleration_ratio": worst("prefilter_acceleration_ratio"),
        f"{prefix}_max_velocity_ratio": worst("prefilter_velocity_ratio"),
        f"{prefix}_plan_vs_executed_p99_mrad": worst("plan_vs_executed_p99_mrad"),
        f"{prefix}_plan_vs_executed_max_mrad": worst("plan_vs_executed_max_mrad"),
        f"{prefix}_unsafe_commands": int(unsafe),
        f"{prefix}_holds_per_episode": round(sum(r["holds"] for r in runs) / n, 3),
        f"{prefix}_extensions_per_episode": round(sum(r["extensions"] for r in runs) / n, 3),
        f"{prefix}_round_trip_p50_ms": round(float(np.percentile(rtt, 50)), 2) if rtt else None,
        f"{prefix}_executor_rate_hz_min": min(rates) if rates else None,
        f"{prefix}_executor_lateness_p99_ms_max": round(max(lateness), 4) if lateness else None,
    }


def done_when(out: dict[str, Any], latencies: Sequence[int]) -> list[str]:
    """The issue-13 criteria the figures miss (empty: all met)."""
    misses: list[str] = []
    base = out.get("latency_0ms_success_rate")
    for lat in latencies:
        p = f"latency_{lat}ms"
        if lat <= 300:
            if out[f"{p}_interventions_per_episode"] != 0:
                misses.append(f"{p}: {out[f'{p}_interventions_per_episode']} interventions per episode")
            for kind in ("jerk", "acceleration", "velocity"):
                ratio = out[f"{p}_max_{kind}_ratio"]
                if ratio is None or ratio > _MAX_RATIO:
                    misses.append(f"{p}: pre-filter {kind} ratio {ratio}")
            p99 = out[f"{p}_plan_vs_executed_p99_mrad"]
            if p99 is None or p99 > _MAX_P99_MRAD:
                misses.append(f"{p}: plan vs executed p99 {p99} mrad")
            if base is not None and out[f"{p}_success_rate"] < base:
                misses.append(f"{p}: success {out[f'{p}_success_rate']} below the 0 ms setting's {base}")
        if out[f"{p}_unsafe_commands"]:
            misses.append(f"{p}: {out[f'{p}_unsafe_commands']} unsafe commands")
    return misses


def run_motion_bench(
    overrides: Sequence[str] = (),
    latencies: Sequence[int] = LATENCIES_MS,
    episodes: int = 10,
    baseline_latencies: Sequence[int] = LATENCIES_MS,
    baseline_episodes: int = 5,
) -> dict[str, Any]:
    """The sweep (see the module docstring); ``overrides`` are stack-config ``section.field=value`` strings."""
    from robot_stack.sim.task import ReachTouchTask
    from robot_stack.training.demo_variants import with_served_variant

    out: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="robot-stack-bench-motion-") as tmp, terminate_on_signals():
        config = with_served_variant(load_stack_config("demo", list(overrides)), Path(tmp))
        server = ServerProcess(config.policy.manifest_path())
        try:
            server.start()
            assert server.endpoint is not None
            clock = MonotonicClock()
            robots: list[RecordingRobot] = []

            def audit(robot: Any) -> RecordingRobot:
                robots.append(RecordingRobot(robot, clock.now_ns, 1.0 / config.control_rate_hz))
                return robots[-1]

            with build_stack(
                config, clock=clock, endpoint=server.endpoint, robot_wrapper=audit, client_factory=TimedClient
            ) as stack:
                task = ReachTouchTask(stack.world, max_duration_s=config.task.max_duration_s)
                robot = robots[0]
                plan = [("latency", lat, episodes, False) for lat in latencies]
                base = [("baseline_latency", lat, baseline_episodes, True) for lat in baseline_latencies]
                for prefix, lat, n, is_baseline in plan + base:
                    server.set_faults({"mode": "slow", "sleep_ms": float(lat)} if lat else {})
                    unsafe_before = robot.unsafe_total
                    runs = [_episode(stack, task, robot, seed, is_baseline) for seed in range(n)]
                    out.update(_summary(f"{prefix}_{lat}ms", runs, robot.unsafe_total - unsafe_before))
                    figures = {k: v for k, v in out.items() if k.startswith(f"{prefix}_{lat}ms_")}
                    log.info("bench motion %s %d ms: %s", prefix, lat, figures)
                server.set_faults({})
                out["executor"] = config.control.executor
                out["blend"] = config.control.blend
                out["action_head"] = config.policy.action_head
                out["model_id"] = stack.metadata.get("model_id")
        finally:
            server.stop()
    out["latencies_ms"] = list(latencies)
    out["load_avg_1min_before"] = round(load_before, 2)
    out["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    misses = done_when(out, latencies)
    out["done_when_met"] = not misses
    out["done_when_misses"] = misses
    return out


@register("motion")
def run(quick: bool, overrides: Sequence[str] = ()) -> dict[str, Any]:
    if quick:
        return run_motion_bench(overrides, (0, 300), 1, (300,), 1)
    return run_motion_bench(overrides)
