"""``robot-stack demo``: the whole control loop, live, on the embedded simulated cell.

Robot side (this process): SimCamera → calibrated DepthProjector → PolicyClient ──ZeroMQ──► policy server
(a subprocess running ONNX Runtime) → EeDeltaXyzDecoder (IK) → Executor thread at 500 Hz → SimRobot.
Everything runs on the real monotonic clock: the world advances with wall time, so inference latency, network time
and decode time really delay the arm, and the executor's latency compensation and watchdog are exercised.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.errors import ConfigError, TransportError
from robot_stack.metrics import StageTimes

log = logging.getLogger("robot_stack.demo")

DEFAULT_MANIFEST = Path(__file__).parent / "policy" / "models" / "reach-touch-v1.yaml"


@dataclass
class DemoReport:
    """What a demo run measured."""

    episodes: list[dict[str, Any]] = field(default_factory=list)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return sum(e["success"] for e in self.episodes) / max(1, len(self.episodes))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    manifest: Path,
    provider: str,
    threads: int | None = None,
    timeout_s: float = 60.0,
    *,
    module: str = "robot_stack.policy.service",
    bind: str | None = None,
    extra_args: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m <module>`` (default the policy service) on ``bind`` (default a free loopback port);
    wait for its READY line. ``extra_args`` go after the standard flags, ``prefix`` before the interpreter (e.g.
    ``unshare --time ...``); the hardware-in-the-loop harness uses both."""
    endpoint = bind or f"tcp://127.0.0.1:{_free_port()}"
    cmd = [*prefix, sys.executable, "-m", module, "--manifest", str(manifest), "--bind", endpoint]
    if provider:
        cmd += ["--provider", provider]
    if threads:
        cmd += ["--threads", str(threads)]
    cmd += list(extra_args)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TransportError(f"policy server exited with code {proc.returncode} before it was ready: {cmd}")
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline().strip()
            if line.startswith("READY"):
                return proc, line.split()[1] if len(line.split()) > 1 else endpoint
    proc.kill()
    raise TransportError(f"policy server not ready after {timeout_s:.0f} s: {cmd}")


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(
    episodes: int = 3,
    seed: int = 0,
    manifest: Path = DEFAULT_MANIFEST,
    provider: str = "cpu",
    rate_hz: float = 500.0,
    max_duration_s: float = 10.0,
    gif_path: Path | None = None,
    scene: str = "sim_tabletop",
    camera_id: str = "front",
    server_threads: int | None = 1,
    action_head: str = "continuous",
    blend: str = "splice",
) -> DemoReport:
    """Run ``episodes`` live episodes; return per-stage latency, executor figures and outcomes."""
    from robot_stack.calibration.store import load_calibration
    from robot_stack.clock import MonotonicClock
    from robot_stack.control.executor import Executor
    from robot_stack.control.scheduler import ChunkScheduler, SchedulerConfig
    from robot_stack.decoders import get_decoder
    from robot_stack.policy.demo_variants import build_variant
    from robot_stack.runtime import PolicyCycle
    from robot_stack.sim.camera import SimCamera
    from robot_stack.sim.robot import SimRobot
    from robot_stack.sim.task import ReachTouchTask
    from robot_stack.sim.world import SimWorld
    from robot_stack.transport.client import PolicyClient

    if not manifest.is_file():
        raise ConfigError(f"policy manifest {manifest} not found; build it with `robot-stack train-demo`")
    report = DemoReport()
    times = StageTimes()
    gif_frames: list[np.ndarray] = []
    per_episode_executor: list[dict[str, Any]] = []

    # On a small machine the renderer, the model and the 500 Hz executor share the cores: keep the software
    # renderer (llvmpipe) and ONNX Runtime to one thread each so the control loop keeps its deadlines.
    os.environ.setdefault("LP_NUM_THREADS", "1")
    variants_dir = Path(tempfile.mkdtemp(prefix="robot-stack-models-"))
    served, decoder_kwargs = build_variant(manifest, action_head, variants_dir)
    decoder_name = "ee_delta_xyz" if action_head == "continuous" else action_head
    if action_head != "motion_tracks":  # tracks carry the full pose; the others are positions of a downward TCP
        decoder_kwargs["orientation"] = "down"
    decoder = get_decoder(decoder_name, **decoder_kwargs)
    proc, endpoint = start_server(served, provider, threads=server_threads)
    log.info("policy server ready at %s (pid %d)", endpoint, proc.pid)
    clock = MonotonicClock()
    world = SimWorld(clock=clock)
    robot = SimRobot(world)
    camera = SimCamera(world, camera_id=camera_id)
    projector = load_calibration(scene, camera_id).projector()
    task = ReachTouchTask(world, max_duration_s=max_duration_s)
    client = PolicyClient(endpoint, robot_id="sim-panda-0", timeout_s=2.0)
    try:
        camera.start()
        camera.read()  # warm-up: the first render creates the GL context and would arrive stale
        meta = client.metadata()
        period_ns = round(1e9 / float(meta.get("control_rate_hz") or 10.0))
        offset_ns = client.sync_clock()
        log.info(
            "server model %s on %s; clock offset %.3f ms", meta.get("model_id"), meta.get("provider"), offset_ns / 1e6
        )
        for ep in range(episodes):
            task.reset(seed + ep)
            executor = Executor(robot, clock, rate_hz=rate_hz)
            scheduler = ChunkScheduler(executor, SchedulerConfig(mode=blend))
            cycle = PolicyCycle(
                [(camera, projector)],
                robot,
                client,
                decoder,
                executor,
                clock,
                times,
                task.instruction,
                scheduler=scheduler,
            )
            executor.start()
            steps = 0
            next_query = clock.now_ns()
            try:
                while not task.is_done():
                    clock.sleep_until(next_query)
                    next_query += period_ns
                    result = cycle.run({"episode": ep, "step": steps}, steps)
                    if gif_path is not None and ep == 0 and steps % 2 == 0 and result.observation is not None:
                        gif_frames.append(result.observation.cameras[0].rgb[::2, ::2].copy())
                    steps += 1
            finally:
                executor.stop()
            errors = sum(n for outcome, n in cycle.outcomes.items() if outcome != "ok")
            ex_stats = executor.stats()
            per_episode_executor.append(ex_stats)
            episode = {
                "episode": ep,
                "seed": seed + ep,
                "success": bool(task.is_success()),
                "time_to_success_s": task.time_to_success_s,
                "duration_s": round(task.elapsed_s(), 2),
                "policy_steps": steps,
                "outcomes": dict(cycle.outcomes),
                "errors": errors,
                "final_distance_m": round(task.tcp_distance_m(), 4),
                "executor_rate_hz": ex_stats.get("achieved_rate_hz"),
                "executor_lateness_p99_ms": ex_stats.get("lateness_p99_ms"),
                "holds": ex_stats.get("holds"),
            }
            report.episodes.append(episode)
            log.info("episode %d: %s", ep, episode)
        report.server = client.health()
    finally:
        client.close()
        camera.stop()
        stop_server(proc)
        shutil.rmtree(variants_dir, ignore_errors=True)
    report.stages = times.summary()
    report.executor = _combine_executor_stats(per_episode_executor)
    if gif_path is not None and gif_frames:
        save_gif(gif_frames, gif_path)
    return report


def _combine_executor_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole-run executor figures from per-episode ``Executor.stats()``: totals, slowest rate, worst p99."""
    if not stats:
        return {}

    def values(key: str) -> list[float]:
        return [s[key] for s in stats if s.get(key) is not None]

    out: dict[str, Any] = {
        key: int(sum(values(key)))
        for key in ("ticks", "skipped_ticks", "holds", "extensions", "command_errors", "lateness_n")
    }
    # interventions: ticks where the command itself broke a limit; catch-up: the output only closing a lag
    out["safety_interventions"] = int(sum(s["safety"].get("total", 0) for s in stats))
    out["safety_catch_up_ticks"] = int(sum(s["safety"].get("catch_up_ticks", 0) for s in stats))
    if values("achieved_rate_hz"):
        out["achieved_rate_hz"] = min(values("achieved_rate_hz"))
    if values("lateness_p50_ms"):
        out["lateness_p50_ms"] = float(np.median(values("lateness_p50_ms")))
        out["lateness_p99_ms"] = max(values("lateness_p99_ms"))
    return out


def save_gif(frames: list[np.ndarray], path: Path, fps: float = 5.0) -> None:
    """Write (H, W, 3) uint8 RGB frames as an animated GIF."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    log.info("saved %d frames to %s", len(images), path)


def format_report(report: DemoReport) -> str:
    """Human-readable latency table and outcomes."""
    lines = ["", "per-stage latency (ms)", f"  {'stage':<28}{'p50':>9}{'p99':>9}{'n':>7}"]
    for stage, s in report.stages.items():
        lines.append(f"  {stage:<28}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['n']:>7d}")
    ex = report.executor
    if "lateness_p50_ms" in ex:
        lines.append(
            f"  {'executor tick lateness':<28}{ex['lateness_p50_ms']:>9.3f}{ex['lateness_p99_ms']:>9.3f}"
            f"{ex.get('lateness_n', 0):>7d}"
        )
    lines.append(
        f"  executor: slowest episode {ex.get('achieved_rate_hz')} Hz, {ex.get('ticks')} ticks, "
        f"{ex.get('skipped_ticks')} skipped, {ex.get('holds')} watchdog holds, {ex.get('extensions')} late-chunk "
        f"extensions, {ex.get('safety_interventions')} safety interventions (+{ex.get('safety_catch_up_ticks')} "
        "catch-up ticks; worst-episode p99 shown)"
    )
    lines.append("")
    lines.append("episodes")
    for e in report.episodes:
        lines.append(
            f"  #{e['episode']} seed {e['seed']}: {'SUCCESS' if e['success'] else 'fail':<8}"
            f" {e['duration_s']:>5.2f} s, {e['policy_steps']} policy steps, final distance {e['final_distance_m']} m"
        )
    n_ok = sum(e["success"] for e in report.episodes)
    lines.append(f"success rate: {n_ok}/{len(report.episodes)} = {report.success_rate:.0%}")
    return "\n".join(lines)
