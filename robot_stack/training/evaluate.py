"""Closed-loop evaluation of a trained policy, served by the real policy server, in the lockstep simulator.

The model is served exactly as ``robot-stack serve`` serves it (:func:`robot_stack.policy.service.serve` in a
thread, ZeroMQ on loopback); every observation goes through :class:`~robot_stack.transport.client.PolicyClient`,
the reply is decoded by the stack's decoder for the manifest's action head (``ee_delta_xyz`` IK decoder, or
``latent_vq`` tokens -> embodiment decoder -> IK) and executed by the lockstep rig
(:class:`~robot_stack.stack.lockstep.LockstepRig`, fake clock: results do not depend on machine load). The scripted
expert runs on the same seeds for reference.

This module does not import torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.console import report_progress
from robot_stack.cycle import chunk_from_reply
from robot_stack.errors import ConfigError, PolicyError
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.robots.base import Robot
from robot_stack.sim.expert import ExpertConfig, ScriptedExpert
from robot_stack.stack.build import build_decoder
from robot_stack.stack.config import load_stack_config
from robot_stack.stack.lockstep import EpisodeResult, LockstepRig
from robot_stack.types import ActionChunk, ActionHead, Observation

__all__ = ["EvalReport", "evaluate_expert", "evaluate_served", "served", "served_rig", "tokenizer_for"]

log = logging.getLogger("robot_stack.training.evaluate")

#: First evaluation seed: far from the seeds ``robot-stack record`` uses by default (0, 1, 2, ...).
EVAL_SEED = 1000


@dataclass(frozen=True)
class EvalReport:
    """Success over ``episodes`` randomised lockstep episodes.

    Attributes:
        label: what was evaluated (model id or ``scripted_expert``).
        seeds: the episodes' seeds. results: one :class:`EpisodeResult` per seed.
        wall_s: wall-clock seconds the evaluation took.
    """

    label: str
    seeds: tuple[int, ...]
    results: tuple[EpisodeResult, ...]
    wall_s: float

    @property
    def success_rate(self) -> float:
        return sum(r.success for r in self.results) / max(1, len(self.results))

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures: success rate, successes/episodes, median time to success, final distances."""
        ok = [r.duration_s for r in self.results if r.success]
        return {
            "label": self.label,
            "episodes": len(self.results),
            "successes": sum(r.success for r in self.results),
            "success_rate": round(self.success_rate, 4),
            "median_time_to_success_s": round(float(np.median(ok)), 2) if ok else None,
            "median_final_distance_mm": round(1000 * float(np.median([r.final_distance_m for r in self.results])), 1),
            "failed_seeds": [r.seed for r in self.results if not r.success],
            "wall_s": round(self.wall_s, 1),
        }


def tokenizer_for(manifest_path: str | Path) -> Path:
    """The VQ tokenizer manifest trained with a ``latent_vq`` policy: ``<model_id>-tokenizer.yaml`` next to it."""
    manifest = PolicyManifest.load(manifest_path)
    path = Path(manifest_path).with_suffix(".yaml").parent / f"{manifest.model_id}-tokenizer.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{manifest_path} is a latent_vq policy but its tokenizer {path} is missing; pass --tokenizer YAML"
        )
    return path


def _run(rig: LockstepRig, act: Any, seeds: list[int], label: str) -> EvalReport:
    t0 = time.perf_counter()
    results = []
    for seed in seeds:
        result = rig.run_episode(act, seed)
        results.append(result)
        log.debug("%s seed %d: %s in %.1f s", label, seed, "success" if result.success else "FAIL", result.duration_s)
        ok = sum(r.success for r in results)
        report_progress(f"evaluate {label}", len(results), len(seeds), "episodes", f"success {ok}/{len(results)}")
    return EvalReport(label, tuple(seeds), tuple(results), time.perf_counter() - t0)


def evaluate_expert(
    episodes: int = 50, seed: int = EVAL_SEED, config: ExpertConfig | None = None, robot: str = "panda"
) -> EvalReport:
    """The scripted expert (privileged cube pose; the recorder's default config, within the arm's TCP speed) on
    ``seed .. seed+episodes-1`` in the cell of arm ``robot``."""
    rig = LockstepRig(load_stack_config("demo", robot=robot))
    if config is None:
        config = ExpertConfig(max_speed_mps=min(ExpertConfig.max_speed_mps, rig.config.embodiment.max_tcp_speed_mps))
    expert = ScriptedExpert(config)
    try:
        return _run(
            rig,
            lambda obs: expert.act(obs.state.ee_pose.translation, rig.task.cube_top_center(), obs.t_obs_ns),
            list(range(seed, seed + episodes)),
            "scripted_expert",
        )
    finally:
        rig.close()


def evaluate_served(
    manifest_path: str | Path,
    episodes: int = 50,
    seed: int = EVAL_SEED,
    *,
    tokenizer: str | Path | None = None,
    threads: int = 1,
    timeout_s: float = 10.0,
    max_duration_s: float = 8.0,
    robot: str = "panda",
) -> EvalReport:
    """Serve ``manifest_path`` with the real server on loopback and run ``episodes`` lockstep episodes through it,
    on arm ``robot`` in its own cell (its IK, limits, rate and workspace; a ``latent_vq`` decoder decodes for it).

    Args:
        manifest_path: policy manifest (``continuous`` ``ee_delta_xyz`` or ``latent_vq`` head).
        tokenizer: VQ tokenizer manifest for a ``latent_vq`` policy (default: :func:`tokenizer_for`).
        threads: ONNX Runtime intra-op threads of the server.
        timeout_s: per-request deadline (generous: the simulated clock waits for the answer).
        max_duration_s: simulated seconds before an episode counts as failed (the recorder's default: 8).
    """
    from robot_stack.transport.client import PolicyClient

    rig, manifest = served_rig(manifest_path, robot, tokenizer=tokenizer, max_duration_s=max_duration_s)
    try:
        with (
            served(manifest_path, threads=threads) as endpoint,
            PolicyClient(endpoint, "eval", timeout_s=timeout_s, model_id=manifest.model_id) as client,
        ):
            step = [0]

            def act(obs: Observation) -> ActionChunk:
                step[0] += 1
                reply = client.infer(obs.arrays(), {"t_obs_ns": obs.t_obs_ns, "step": step[0]})
                return chunk_from_reply(reply, obs.t_obs_ns)

            return _run(rig, act, list(range(seed, seed + episodes)), f"{manifest.model_id} on {robot}")
    finally:
        rig.close()


def served_rig(
    manifest_path: str | Path,
    robot: str = "panda",
    *,
    tokenizer: str | Path | None = None,
    max_duration_s: float = 8.0,
    robot_wrapper: Callable[[Robot], Robot] | None = None,
    overrides: Sequence[str] = (),
) -> tuple[LockstepRig, PolicyManifest]:
    """The lockstep rig of arm ``robot`` (the ``demo`` stack in its cell) with the decoder for the action head of
    the policy ``manifest_path``, and that manifest: what a served evaluation runs the policy's replies through.

    Args:
        manifest_path: policy manifest (``continuous`` ``ee_delta_xyz`` or ``latent_vq`` head).
        tokenizer: VQ tokenizer manifest for a ``latent_vq`` policy (default: :func:`tokenizer_for`).
        max_duration_s: simulated seconds before an episode counts as failed.
        robot_wrapper: wraps the cell's robot (e.g. an auditing robot, :class:`LockstepRig`).
        overrides: ``section.field=value`` overrides of the stack (e.g. ``control.workspace_from_robot=true``).

    Raises:
        ConfigError: another action head or space (the rig is closed first).
    """
    manifest = PolicyManifest.load(manifest_path)
    head = ActionHead.parse(manifest.action_head)
    config = load_stack_config("demo", overrides, robot=robot)
    rig = LockstepRig(config, max_duration_s=max_duration_s, robot_wrapper=robot_wrapper)
    if head is ActionHead.LATENT_VQ:
        options = {"manifest": tokenizer or tokenizer_for(manifest_path)}
        config = rig.config.replace(decoder=dataclasses.replace(rig.config.decoder, options=options))
        rig.decoder = build_decoder(config, head.value, manifest.action_space)[0]
    elif head is ActionHead.CONTINUOUS and manifest.action_space == "ee_delta_xyz":
        pass  # the rig's own decoder: the stack's ee_delta_xyz decoder
    else:
        rig.close()
        raise ConfigError(
            f"evaluate: {manifest.model_id} has action head {head!r} / space {manifest.action_space!r}; this "
            "evaluation handles continuous ee_delta_xyz and latent_vq policies"
        )
    return rig, manifest


@contextlib.contextmanager
def served(manifest_path: str | Path, *, threads: int = 1, engine: str = "ort", provider: str = "cpu") -> Iterator[str]:
    """Serve ``manifest_path`` with the real server (:func:`robot_stack.policy.service.serve`, in a thread, on
    loopback) for the duration of the block; yields its endpoint. Raises PolicyError when it does not start."""
    from robot_stack.policy.service import serve

    endpoint: list[str] = []
    ready = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def on_ready(bound: str) -> None:
        endpoint.append(bound)
        ready.set()

    def serve_thread() -> None:
        try:
            serve(
                manifest_path,
                "tcp://127.0.0.1:*",
                provider,
                threads=threads,
                on_ready=on_ready,
                stop_event=stop,
                engine=engine,
            )
        except BaseException as exc:  # reported to the caller below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=serve_thread, name="eval-policy-server", daemon=True)
    thread.start()
    try:
        if not ready.wait(120.0) or errors:
            raise PolicyError(f"policy server for {manifest_path} did not start: {errors[0] if errors else 'timeout'}")
        yield endpoint[0]
    finally:
        stop.set()
        thread.join(10.0)
