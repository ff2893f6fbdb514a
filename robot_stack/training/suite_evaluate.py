"""Closed-loop evaluation of a language-conditioned policy on the tabletop suite, served by the real server.

The model is served exactly as ``robot-stack serve`` serves it (:func:`robot_stack.training.evaluate.served`); every
observation goes through :class:`~robot_stack.transport.client.PolicyClient` in the wire form the served model asks
for (:class:`~robot_stack.cycle.RequestLayout`: the depth form sends uint16 depth + the scene's calibration, the
instruction travels as text in the request meta and the server tokenizes it). The lockstep rig
(:class:`~robot_stack.stack.lockstep.LockstepRig`, fake clock: results do not depend on machine load) executes the
chunks through the stack's decoder and executor.

Episodes: for each instruction, episode ``j`` has seed ``seed + j`` (the objects' placement) and runs in scene
``scenes[j % len(scenes)]`` (the camera placement and its calibration file) — the same seeds and scenes for every
instruction, every model and both the matched and the mismatched runs.

**Language ablation** (``mismatched=True``): the robot is told another instruction than the task's, one that names
another object (:func:`mismatched_instruction`); success is still measured on the task's own target, so a model
that uses the language falls to chance (a third: one of three objects) or below, and ``followed_sent`` counts the
episodes that ended on the object the sent instruction names (touching it, or within the touch radius of its top).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.cycle import RequestLayout, chunk_from_reply
from robot_stack.errors import ConfigError
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.sim.tabletop import INSTRUCTIONS, OBJECTS, TabletopTask, instruction_for
from robot_stack.stack.lockstep import LockstepRig
from robot_stack.training.evaluate import EVAL_SEED, served
from robot_stack.training.vla_data import vla_scene_config
from robot_stack.types import ActionChunk, Observation

__all__ = ["SuiteEpisode", "SuiteReport", "evaluate_suite", "mismatched_instruction", "served_policy"]

log = logging.getLogger("robot_stack.training.suite")

#: Chance of touching the named object for a policy that ignores the instruction: one of the three objects.
CHANCE = 1.0 / len(OBJECTS)
_TOUCH_BY_OBJECT = {i.target: i.text for i in INSTRUCTIONS if i.kind == "touch" and i.target in OBJECTS}


def mismatched_instruction(task: TabletopTask) -> str:
    """An instruction of the suite naming another object than ``task``'s target (after its reset): the next colour
    instruction, in the suite's order, whose object is not the target."""
    names = list(_TOUCH_BY_OBJECT)
    start = (names.index(task.spec.target) + 1) if task.spec.target in names else 0
    for k in range(len(names)):
        phrase = names[(start + k) % len(names)]
        if OBJECTS[phrase] != task.target:
            return _TOUCH_BY_OBJECT[phrase]
    raise ConfigError("no mismatched instruction: the suite has a single object")  # pragma: no cover


@dataclass(frozen=True)
class SuiteEpisode:
    """One evaluated episode.

    Attributes:
        scene, seed: the camera placement and the objects' placement.
        instruction: the task's instruction (success is measured on it). sent: what the robot was told.
        success: the task's instruction was carried out. touched: the object the episode ended on (None: timeout).
        followed_sent: it ended on the object ``sent`` names (the task's own target when ``sent == instruction``):
            touched it, or (told another object) ended with the TCP within the touch radius of its top centre.
        duration_s: simulated seconds. steps: policy steps. infer_ms: median server inference time.
    """

    scene: str
    seed: int
    instruction: str
    sent: str
    success: bool
    touched: str | None
    followed_sent: bool
    duration_s: float
    steps: int
    infer_ms: float


@dataclass(frozen=True)
class SuiteReport:
    """Evaluated episodes of one model."""

    label: str
    episodes: tuple[SuiteEpisode, ...]
    wall_s: float
    mismatched: bool = False

    def per_instruction(self) -> dict[str, dict[str, Any]]:
        """Per task instruction: episodes, successes, success rate, followed-sent rate, touched objects, median
        time to success (s)."""
        out: dict[str, dict[str, Any]] = {}
        for text in dict.fromkeys(e.instruction for e in self.episodes):
            eps = [e for e in self.episodes if e.instruction == text]
            ok = [e.duration_s for e in eps if e.success]
            out[text] = {
                "episodes": len(eps),
                "successes": sum(e.success for e in eps),
                "success_rate": round(sum(e.success for e in eps) / len(eps), 4),
                "followed_sent_rate": round(sum(e.followed_sent for e in eps) / len(eps), 4),
                "touched": dict(Counter(str(e.touched) for e in eps)),
                "median_time_to_success_s": round(float(np.median(ok)), 2) if ok else None,
                "failed_seeds": [f"{e.scene}:{e.seed}" for e in eps if not e.success],
            }
        return out

    def summary(self) -> dict[str, Any]:
        eps = self.episodes
        return {
            "label": self.label,
            "mismatched_instruction": self.mismatched,
            "scenes": sorted({e.scene for e in eps}),
            "episodes": len(eps),
            "success_rate": round(sum(e.success for e in eps) / max(1, len(eps)), 4),
            "followed_sent_rate": round(sum(e.followed_sent for e in eps) / max(1, len(eps)), 4),
            "chance": round(CHANCE, 4),
            "median_infer_ms": round(float(np.median([e.infer_ms for e in eps])), 2) if eps else None,
            "per_instruction": self.per_instruction(),
            "wall_s": round(self.wall_s, 1),
        }


@contextlib.contextmanager
def _served_client(
    manifest_path: str | Path, robot_id: str, *, threads: int, engine: str, timeout_s: float
) -> Iterator[tuple[PolicyManifest, Any, RequestLayout]]:
    """Serve ``manifest_path`` with the real server for the block; yield its manifest, a connected
    :class:`~robot_stack.transport.client.PolicyClient` and the wire form the served model asks for."""
    from robot_stack.transport.client import PolicyClient

    manifest = PolicyManifest.load(manifest_path)
    with (
        served(manifest_path, threads=threads, engine=engine) as endpoint,
        PolicyClient(endpoint, robot_id, timeout_s=timeout_s, model_id=manifest.model_id) as client,
    ):
        yield manifest, client, RequestLayout.from_metadata(client.metadata())


@contextlib.contextmanager
def served_policy(
    manifest_path: str | Path, *, threads: int = 1, engine: str = "ort", timeout_s: float = 30.0
) -> Iterator[Callable[[Observation, str], ActionChunk]]:
    """Serve ``manifest_path`` with the real server for the block and yield ``act(obs, instruction)``: one request
    in the wire form the served model asks for (the instruction as text), its reply as an :class:`ActionChunk`.
    Used where a served policy drives the lockstep rig outside an evaluation (DAgger collection). Raises
    ConfigError for a model that takes the XYZ form (the VLA data rig renders the depth form)."""
    with _served_client(manifest_path, "dagger", threads=threads, engine=engine, timeout_s=timeout_s) as (
        _manifest,
        client,
        layout,
    ):
        if not layout.depth_form:
            raise ConfigError(f"{manifest_path}: the served policy must take the depth form (uint16 depth + calib)")

        def act(obs: Observation, instruction: str) -> ActionChunk:
            reply = client.infer(layout.arrays(obs), {**layout.meta(obs), "task": instruction})
            return chunk_from_reply(reply, obs.t_obs_ns)

        yield act


def evaluate_suite(
    manifest_path: str | Path,
    scenes: Sequence[str],
    *,
    instructions: Sequence[str] | None = None,
    episodes: int = 50,
    seed: int = EVAL_SEED,
    mismatched: bool = False,
    threads: int = 1,
    engine: str = "ort",
    max_duration_s: float = 9.0,
    timeout_s: float = 30.0,
    progress: Callable[[int, int], None] | None = None,
    image_hw: tuple[int, int] = (480, 640),
) -> SuiteReport:
    """Serve ``manifest_path`` and run ``episodes`` episodes per instruction over ``scenes`` (module docstring);
    ``image_hw``: the camera's image size (the model's)."""
    texts = [instruction_for(t).text for t in instructions] if instructions else [i.text for i in INSTRUCTIONS]
    if not scenes:
        raise ConfigError("evaluate: name at least one scene")
    t0 = time.perf_counter()
    results: list[SuiteEpisode] = []
    total = episodes * len(texts)
    with _served_client(manifest_path, "eval", threads=threads, engine=engine, timeout_s=timeout_s) as (
        manifest,
        client,
        layout,
    ):
        for s_idx, scene in enumerate(scenes):
            config = vla_scene_config(scene, texts[0], image_hw)
            rig = LockstepRig(config, max_duration_s=max_duration_s, xyz=not layout.depth_form)
            try:
                for text in texts:
                    rig.task.set_instruction(text)
                    for j in range(s_idx, episodes, len(scenes)):
                        results.append(_episode(rig, client, layout, scene, seed + j, mismatched))
                        if progress is not None:
                            progress(len(results), total)
            finally:
                rig.close()
    order = {t: i for i, t in enumerate(texts)}
    results.sort(key=lambda e: (order[e.instruction], e.seed))
    return SuiteReport(manifest.model_id, tuple(results), time.perf_counter() - t0, mismatched)


def _episode(
    rig: LockstepRig, client: Any, layout: RequestLayout, scene: str, seed: int, mismatched: bool
) -> SuiteEpisode:
    task: TabletopTask = rig.task
    infer: list[float] = []
    sent: list[str] = []

    def act(obs: Observation) -> ActionChunk:
        if not sent:  # the target (e.g. the nearest object) is known once the episode has been reset
            sent.append(mismatched_instruction(task) if mismatched else task.instruction)
        meta = {**layout.meta(obs), "task": sent[0], "step": len(infer)}
        reply = client.infer(layout.arrays(obs), meta)
        infer.append(reply.timing.infer_ms)
        return chunk_from_reply(reply, obs.t_obs_ns)

    result = rig.run_episode(act, seed)
    said = sent[0] if sent else task.instruction
    spec = instruction_for(said)
    named = task.target if said == task.instruction else OBJECTS.get(spec.target, task.nearest_object())
    followed = result.touched == named and (result.success or said != task.instruction)
    if said != task.instruction and result.touched is None:
        # told another object, the arm may end at its top without contact: only the task's own target ends the
        # episode by distance, so ending within the touch radius of the named object counts as following too
        followed = task.tcp_distance_m(named) <= task.touch_radius_m
    log.info(
        "%s seed %d %r (sent %r): %s, touched %s, %.1f s",
        scene,
        seed,
        task.instruction,
        said,
        "success" if result.success else "FAIL",
        result.touched,
        result.duration_s,
    )
    return SuiteEpisode(
        scene,
        seed,
        task.instruction,
        said,
        result.success,
        result.touched,
        bool(followed),
        round(result.duration_s, 2),
        result.steps,
        float(np.median(infer)) if infer else 0.0,
    )
