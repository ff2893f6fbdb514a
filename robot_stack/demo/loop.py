"""``robot-stack demo``: the whole control loop, live, on the embedded simulated cell.

The stack comes from the ``demo`` preset (``robot_stack/configs/demo.yaml``) through
:func:`robot_stack.stack.build_stack`, the same builder the hardware-in-the-loop harness uses. Robot side (this
process): SimCamera → calibrated DepthProjector → PolicyClient ──ZeroMQ──► policy server (a subprocess running ONNX
Runtime) → decoder (IK) → ChunkScheduler → Executor thread at 500 Hz → SimRobot. Everything runs on the real
monotonic clock: the world advances with wall time, so inference latency, network time and decode time really delay
the arm, and the executor's latency compensation and watchdog are exercised.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.console import report_progress
from robot_stack.cycle import CycleResult
from robot_stack.policy.manifest import DEMO_MANIFEST
from robot_stack.stack import EpisodeStack, StackConfig, build_stack, load_stack_config, run_live_episode
from robot_stack.stack.build import terminate_on_signals
from robot_stack.viewer.live import LiveView
from robot_stack.viewer.stack_view import StackView

log = logging.getLogger("robot_stack.demo")

DEFAULT_MANIFEST = DEMO_MANIFEST


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


def demo_config(
    preset: str | Path = "demo",
    overrides: Sequence[str] = (),
    *,
    manifest: Path | None = None,
    provider: str | None = None,
    rate_hz: float | None = None,
    max_duration_s: float | None = None,
    action_head: str | None = None,
    blend: str | None = None,
    robot: str | None = None,
    task: str | None = None,
) -> StackConfig:
    """The demo's stack config: a preset (switched to arm ``robot`` when given: its cell and the policy that serves
    every arm), the command line's ``--set`` overrides, then its named flags (``task``: an instruction of the
    preset's task suite)."""
    config = load_stack_config(preset, overrides, robot=robot)
    if task is not None and config.task.suite == "tabletop":
        from robot_stack.sim.tabletop import instruction_for

        task = instruction_for(task).text  # ConfigError listing the suite's instructions
    flags = {
        "policy.manifest": None if manifest is None else str(manifest),
        "policy.provider": provider,
        "policy.action_head": action_head,
        "control.rate_hz": rate_hz,
        "control.blend": blend,
        "task.max_duration_s": max_duration_s,
        "task.instruction": task,
    }
    named = [f"{key}={value}" for key, value in flags.items() if value is not None]
    return config.with_overrides(named) if named else config


def run_demo(
    config: StackConfig | None = None,
    episodes: int = 3,
    seed: int = 0,
    gif_path: Path | None = None,
    view: LiveView | None = None,
) -> DemoReport:
    """Run ``episodes`` live episodes of the stack ``config`` describes (default: the ``demo`` preset); return
    per-stage latency, executor figures and outcomes. Every process and camera is stopped on every exit path.
    ``view``: log every cycle into this live view (``--display`` / ``--save``)."""
    config = config or load_stack_config("demo")
    report = DemoReport()
    gif_frames: list[np.ndarray] = []
    per_episode_executor: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="robot-stack-models-") as variants_dir, terminate_on_signals():
        from robot_stack.training.demo_variants import with_served_variant

        config = with_served_variant(config, Path(variants_dir))
        with build_stack(config) as stack:
            task = _task(config, stack.world)
            shown = StackView(view, stack) if view is not None else None
            period_ns = round(stack.period_s * 1e9)
            report_progress("demo", 0, episodes, "episodes")
            for ep in range(episodes):
                episode = stack.new_episode()  # first: it may spawn the real-time process (not on the task's clock)
                task.reset(seed + ep)
                if shown is not None:
                    shown.start_episode(episode, stack.world.cube_top_center())

                def keep_frame(step: int, result: CycleResult, ep: int = ep) -> None:
                    if gif_path is not None and ep == 0 and step % 2 == 0 and result.observation is not None:
                        gif_frames.append(result.observation.cameras[0].rgb[::2, ::2].copy())
                    if shown is not None:
                        shown.after_cycle(step, result)

                steps = run_live_episode(
                    episode,
                    stack.clock,
                    period_ns,
                    done=lambda step, now: task.is_done(),
                    max_steps=int(config.task.max_duration_s * 1e9 / period_ns) * 2 + 10,
                    after_cycle=keep_frame,
                    meta=lambda step, ep=ep: {"episode": ep, "step": step},
                )
                report.episodes.append(_episode_summary(ep, seed + ep, task, episode, steps))
                per_episode_executor.append(episode.executor.stats())
                log.debug("episode %d: %s", ep, report.episodes[-1])
                ok = sum(e["success"] for e in report.episodes)
                report_progress("demo", ep + 1, episodes, "episodes", f"success {ok}/{ep + 1}")
            report.server = stack.client.health()
            report.stages = stack.times.summary()
    report.executor = _combine_executor_stats(per_episode_executor)
    if gif_path is not None and gif_frames:
        save_gif(gif_frames, gif_path)
    return report


def _task(config: StackConfig, world: Any) -> Any:
    """The episode task of the config's suite: reach-and-touch, or the tabletop suite's instruction."""
    if config.task.suite == "tabletop":
        from robot_stack.sim.tabletop import TabletopTask

        return TabletopTask(world, config.task.instruction, max_duration_s=config.task.max_duration_s)
    from robot_stack.sim.task import ReachTouchTask

    return ReachTouchTask(world, max_duration_s=config.task.max_duration_s)


def _episode_summary(ep: int, seed: int, task: Any, episode: EpisodeStack, steps: int) -> dict[str, Any]:
    cycle = episode.cycle
    ex_stats = episode.executor.stats()
    return {
        "episode": ep,
        "seed": seed,
        "instruction": task.instruction,
        "success": bool(task.is_success()),
        "touched": task.touched_object(),
        "time_to_success_s": task.time_to_success_s,
        "duration_s": round(task.elapsed_s(), 2),
        "policy_steps": steps,
        "outcomes": dict(cycle.outcomes),
        "errors": sum(n for outcome, n in cycle.outcomes.items() if outcome != "ok"),
        "recoveries": cycle.recoveries,
        "final_distance_m": round(task.tcp_distance_m(), 4),
        "executor_rate_hz": ex_stats.get("achieved_rate_hz"),
        "executor_lateness_p99_ms": ex_stats.get("lateness_p99_ms"),
        "holds": ex_stats.get("holds"),
        # plans are feasible by construction: every safety intervention is a fault event, counted here
        "safety_interventions": int(ex_stats["safety"]["total"]),
        "prefilter_peak_ratio": ex_stats.get("prefilter_peak_ratio"),
        "plan_deviation_max_mrad": ex_stats.get("plan_deviation_max_mrad"),
        "delay_estimate_ms": cycle.delay.summary()["estimate_ms"],
    }


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
    peaks = [s.get("prefilter_peak_ratio") or {} for s in stats]
    out["prefilter_peak_ratio"] = {k: max(p.get(k, 0.0) for p in peaks) for k in ("velocity", "acceleration", "jerk")}
    out["plan_deviation_max_mrad"] = max(float(s.get("plan_deviation_max_mrad") or 0.0) for s in stats)
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
        f"extensions (worst-episode p99 shown)"
    )
    peak = ex.get("prefilter_peak_ratio") or {}
    lines.append(
        f"  motion: {ex.get('safety_interventions')} safety interventions (fault events; "
        f"+{ex.get('safety_catch_up_ticks')} catch-up ticks), plan before the filter at "
        f"{peak.get('velocity', 0):.3f} / {peak.get('acceleration', 0):.3f} / {peak.get('jerk', 0):.3f} of the "
        f"velocity / acceleration / jerk limits, plan vs sent at most {ex.get('plan_deviation_max_mrad', 0):.3f} mrad"
    )
    lines.append("")
    lines.append("episodes")
    for e in report.episodes:
        lines.append(
            f"  #{e['episode']} seed {e['seed']}: {'SUCCESS' if e['success'] else 'fail':<8}"
            f" {e['duration_s']:>5.2f} s, {e['policy_steps']} policy steps, final distance {e['final_distance_m']} m"
            f" ({e.get('instruction', '')!r}, touched {e.get('touched')})"
        )
    n_ok = sum(e["success"] for e in report.episodes)
    lines.append(f"success rate: {n_ok}/{len(report.episodes)} = {report.success_rate:.0%}")
    return "\n".join(lines)
