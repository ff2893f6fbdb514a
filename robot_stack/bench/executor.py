"""``robot-stack bench executor``: the fixed-rate executor at 500 Hz and 1 kHz on the real monotonic clock.

The executor drives a :class:`~robot_stack.sim.kinematic.KinematicRobot` (FK on every state read) while a
publisher thread hands it a new 1 s trajectory every 100 ms, like a policy streaming chunks. Reported per rate:
achieved rate, tick lateness against the absolute schedule (p50/p99/max ms), skipped ticks and the cost of one
tick. Baseline, same run and same work: a naive ``tick(); time.sleep(period)`` loop, whose rate falls short and
whose schedule drifts because every period adds the work time and the sleep's oversleep.

Under load (keys ``hogs_thread_*`` and ``hogs_process_*``, same run): two CPU-hog processes (one per core of a
2-core machine; spawned and killed by the bench) run beside the executor, and a thread of the bench's own process
keeps its GIL busy the way rendering, IK and ZeroMQ do in the demo. The in-process threaded executor
(``Executor``) and the real-time process (``ProcessExecutor``: own process, pinned, ``SCHED_FIFO`` where the host
allows) run the same 500 Hz work in turn; reported: achieved rate, lateness p50/p99/max, skipped ticks, overruns,
safety interventions, ruckig joins run inside a tick (``joins_in_loop``; the process prepares each hand-over in the
main process instead: ``handovers_prepared``), and whether the process got ``SCHED_FIFO``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from robot_stack.bench.load import cpu_hogs
from robot_stack.bench.registry import register
from robot_stack.clock import MonotonicClock
from robot_stack.control.executor import Executor
from robot_stack.control.rt_process import ProcessExecutor, RobotSpec
from robot_stack.metrics import latency_stats
from robot_stack.robots import panda
from robot_stack.sim.kinematic import KinematicRobot
from robot_stack.types import JointTrajectory

log = logging.getLogger("robot_stack.bench.executor")


def _wave(t0_ns: int, phase: float) -> JointTrajectory:
    """1 s of a slow wave on every joint (0.3 rad peak to peak, 0.5 Hz, at rest at phase 0), waypoints every 50 ms."""
    t = np.arange(0.0, 1.0001, 0.05)
    pos = panda.HOME_Q + 0.15 * (1.0 - np.cos(2 * np.pi * 0.5 * t + phase))[:, None] * np.ones(7)
    return JointTrajectory(panda.ARM_JOINTS, t0_ns + np.round(t * 1e9).astype(np.int64), pos)


def _publisher(ex: Executor | ProcessExecutor, clock: MonotonicClock, stop: threading.Event, start_ns: int) -> None:
    while not stop.is_set():
        now = clock.now_ns()
        ex.set_trajectory(_wave(now, 2 * np.pi * 0.5 * (now - start_ns) / 1e9))
        stop.wait(0.1)


def _run_executor(rate_hz: float, duration_s: float) -> dict[str, Any]:
    clock = MonotonicClock()
    robot = KinematicRobot(clock=clock)
    ex = Executor(robot, clock, rate_hz=rate_hz, lateness_window=int(rate_hz * duration_s) + 16)
    stop = threading.Event()
    pub = threading.Thread(target=_publisher, args=(ex, clock, stop, clock.now_ns()), daemon=True)
    pub.start()
    ex.start()
    time.sleep(duration_s)
    stop.set()
    pub.join()
    ex.stop()
    st = ex.stats()
    out = {
        "achieved_rate_hz": st.get("achieved_rate_hz", 0.0),
        "skipped_ticks": st["skipped_ticks"],
        "ticks": st["ticks"],
        "holds": st["holds"],
        "safety_interventions": st["safety"]["total"],
    }
    out.update({k: v for k, v in st.items() if k.startswith("lateness_")})
    return out


def _run_naive(rate_hz: float, duration_s: float) -> dict[str, Any]:
    """Same work per tick, paced with ``time.sleep(period)`` after each tick."""
    clock = MonotonicClock()
    robot = KinematicRobot(clock=clock)
    ex = Executor(robot, clock, rate_hz=rate_hz)
    period_s = 1.0 / rate_hz
    t0 = clock.now_ns()
    ex.set_trajectory(_wave(t0, 0.0))
    next_publish = t0 + 100_000_000
    k = 0
    lateness = []
    while True:
        now = clock.now_ns()
        if now - t0 >= duration_s * 1e9:
            break
        lateness.append((now - (t0 + round(k * period_s * 1e9))) / 1e9)
        if now >= next_publish:
            ex.set_trajectory(_wave(now, 2 * np.pi * 0.5 * (now - t0) / 1e9))
            next_publish += 100_000_000
        ex.tick(now)
        k += 1
        time.sleep(period_s)
    elapsed = (clock.now_ns() - t0) / 1e9
    out = {"achieved_rate_hz": round(k / elapsed, 2), "drift_ms": round((elapsed - k * period_s) * 1e3, 2)}
    out.update(latency_stats(np.array(lateness), prefix="lateness_"))
    return out


def _tick_cost(rate_hz: float, n: int) -> dict[str, float]:
    clock = MonotonicClock()
    ex = Executor(KinematicRobot(clock=clock), clock, rate_hz=rate_hz)
    ex.set_trajectory(_wave(clock.now_ns(), 0.0))
    samples = np.empty(n)
    for i in range(n):
        t = time.perf_counter_ns()
        ex.tick(clock.now_ns())
        samples[i] = (time.perf_counter_ns() - t) / 1e9
    return latency_stats(samples, prefix="tick_cost_")


def _run_loaded(mode: str, duration_s: float) -> dict[str, Any]:
    """500 Hz in ``mode`` ("thread" or "process") for ``duration_s`` while the hogs run."""
    clock = MonotonicClock()
    window = int(500 * duration_s) + 16
    ex: Executor | ProcessExecutor
    if mode == "thread":
        ex = Executor(KinematicRobot(clock=clock), clock, rate_hz=500.0, lateness_window=window)
    else:
        ex = ProcessExecutor(
            RobotSpec("robot_stack.sim.kinematic:KinematicRobot"), panda.ARM_JOINTS, panda.LIMITS, clock=clock
        )
    ex.start()
    stop = threading.Event()
    pub = threading.Thread(target=_publisher, args=(ex, clock, stop, clock.now_ns()), daemon=True)
    pub.start()
    time.sleep(duration_s)
    stop.set()
    pub.join()
    ex.stop()
    st = ex.stats()
    out: dict[str, Any] = {
        "achieved_rate_hz": st.get("achieved_rate_hz", 0.0),
        "skipped_ticks": st["skipped_ticks"],
        "overruns": st["overruns"],
        "ticks": st["ticks"],
        "safety_interventions": st["safety"]["total"],
    }
    out.update({k: v for k, v in st.items() if k in ("lateness_p50_ms", "lateness_p99_ms", "lateness_max_ms")})
    out["plans_accepted"] = st["trajectories_accepted"]
    out["joins_in_loop"] = st["joins"]  # ruckig joins run inside a tick (the process prepares them ahead instead)
    if mode == "process":
        out["sched_fifo"] = st["realtime"]["sched_fifo"]
        out["cpu"] = st["realtime"]["cpu"]
        out["handovers_prepared"] = st["handovers_prepared"]
    return out


def _gil_hog(stop: threading.Event) -> None:
    """Pure-Python work holding the GIL, like a busy robot-side main process."""
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x += i * i


def _loaded(duration_s: float) -> dict[str, Any]:
    """Thread mode then process mode, each with two CPU-hog processes and a GIL-hog thread beside it."""
    stop = threading.Event()
    gil = threading.Thread(target=_gil_hog, args=(stop,), name="bench-gil-hog", daemon=True)
    result: dict[str, Any] = {"hogs": "2 CPU-hog processes + 1 GIL-hog thread"}
    with cpu_hogs(2):
        gil.start()
        try:
            for mode in ("thread", "process"):
                for key, value in _run_loaded(mode, duration_s).items():
                    result[f"hogs_{mode}_{key}"] = value
        finally:
            stop.set()
            gil.join()
    result["hogs_process_vs_thread_p99_ratio"] = round(
        result.get("hogs_process_lateness_p99_ms", 0.0) / max(result.get("hogs_thread_lateness_p99_ms", 1e-9), 1e-9),
        4,
    )
    return result


@register("executor")
def run(quick: bool) -> dict[str, Any]:
    """Executor vs naive sleep loop at 500 Hz and 1 kHz (~3 s each, 1 s with ``quick``); then thread vs
    real-time process under CPU and GIL load (3 s each, 1.5 s with ``quick``)."""
    duration = 1.0 if quick else 3.0
    result: dict[str, Any] = {"duration_s": duration}
    for rate in (500.0, 1000.0):
        tag = f"{int(rate)}hz"
        ex = _run_executor(rate, duration)
        naive = _run_naive(rate, duration)
        for key, value in ex.items():
            result[f"{tag}_{key}"] = value
        for key, value in naive.items():
            result[f"{tag}_naive_{key}"] = value
        result[f"{tag}_rate_ratio_vs_naive"] = round(ex["achieved_rate_hz"] / max(naive["achieved_rate_hz"], 1e-9), 3)
        result[f"{tag}_rate_fraction_of_target"] = round(ex["achieved_rate_hz"] / rate, 4)
    result.update(_tick_cost(500.0, 500 if quick else 3000))
    result.update(_loaded(1.5 if quick else 3.0))
    return result
