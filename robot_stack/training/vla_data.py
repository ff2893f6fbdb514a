"""Demonstrations for the VLA: the scripted expert on every instruction of the tabletop suite, over scene set A.

The lockstep simulator (:class:`~robot_stack.stack.lockstep.LockstepRig`, fake clock: the data do not depend on
machine load) runs the stack's own cell, decoder and executor; the scripted expert
(:func:`robot_stack.sim.expert.tabletop_expert_actions`, privileged object poses) labels every observation with a
clean ``ee_delta_xyz`` chunk, while the executed chunk carries DART-style exploration noise and the arm starts from a
perturbed posture, so the data cover recoveries. Episodes cycle through the scenes (camera placements) and the
instructions; each scene's calibration is the one the robot sends.

Each sample keeps what the served model's graph reads — the camera's RGB and uint16 depth on the model's pixel grid
(rows ``offset + stride * i``, columns ``offset + stride * j``: exactly the graph's first slice), the packed
calibration, the proprio vector, the instruction — plus the label and the target point (for an auxiliary loss).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from robot_stack.errors import DatasetError
from robot_stack.sim.expert import ExpertConfig, tabletop_expert_actions
from robot_stack.sim.tabletop import INSTRUCTIONS
from robot_stack.stack.config import StackConfig, load_stack_config
from robot_stack.stack.lockstep import LockstepRig
from robot_stack.types import ActionChunk, Observation

__all__ = ["VlaSamples", "collect_vla", "dart_perturbation", "vla_scene_config"]

#: A policy that drives the rig while the expert labels (DAgger): (observation, instruction) -> chunk.
Learner = Callable[[Observation, str], ActionChunk]

log = logging.getLogger("robot_stack.training.vla")


def vla_scene_config(scene: str, instruction: str, image_hw: tuple[int, int]) -> StackConfig:
    """The ``vla`` stack preset on calibration scene ``scene`` with the task ``instruction`` and the front camera
    at ``image_hw`` (height, width) pixels: the rig the VLA data is collected on and evaluated on."""
    return load_stack_config(
        "vla",
        [
            f"calibration.scene={scene}",
            f"task.instruction={instruction}",
            f"cameras.front.height={image_hw[0]}",
            f"cameras.front.width={image_hw[1]}",
        ],
    )


#: The per-sample arrays of :class:`VlaSamples` besides the episode and scene indices.
_SAMPLE_ARRAYS = ("rgb", "depth", "calib", "state", "instruction", "chunks", "target")


@dataclass(frozen=True)
class VlaSamples:
    """N demonstration samples of one camera.

    Attributes:
        rgb: (N, h, w, 3) uint8 on the model's pixel grid. depth: (N, h, w) uint16 depth units, same grid.
        calib: (N, 17) float32 packed calibrations (:mod:`robot_stack.calibration.payload`).
        state: (N, 11) float32 ``RobotState.vector()``.
        instruction: (N,) int64 index into ``instructions``.
        chunks: (N, horizon, 3) float32 ``ee_delta_xyz`` labels, metres, base frame.
        target: (N, 3) float32 the instruction's target point (top centre; the pushed object's centre), base frame.
        episode: (N,) int64 episode index. scene: (N,) int64 index into ``scenes``.
        success: (E,) bool whether each episode's (noisy) execution succeeded.
        scenes, instructions: names. stride, offset: the pixel grid. dt_s: chunk step.
        image_hw: (height, width) of the camera images the grid was taken from.
    """

    rgb: np.ndarray
    depth: np.ndarray
    calib: np.ndarray
    state: np.ndarray
    instruction: np.ndarray
    chunks: np.ndarray
    target: np.ndarray
    episode: np.ndarray
    scene: np.ndarray
    success: np.ndarray
    scenes: tuple[str, ...]
    instructions: tuple[str, ...]
    stride: int
    offset: int
    dt_s: float
    image_hw: tuple[int, int] = (480, 640)

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def episodes(self) -> int:
        return int(self.success.shape[0])

    def split(self, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample indices (train, val): whole episodes held out."""
        rng = np.random.default_rng(seed)
        eps = np.unique(self.episode)
        n_val = int(round(val_fraction * len(eps)))
        val_eps = set(rng.choice(eps, size=n_val, replace=False).tolist()) if n_val else set()
        is_val = np.isin(self.episode, list(val_eps))
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)

    @classmethod
    def concat(cls, parts: Sequence[VlaSamples]) -> VlaSamples:
        """One set from several (e.g. demonstrations and DAgger rounds): episode numbers are renumbered so that they
        stay distinct, scenes and instructions are merged by name. Raises DatasetError when the pixel grids or chunk
        steps differ."""
        if not parts:
            raise DatasetError("nothing to concatenate")
        first = parts[0]
        key = (first.stride, first.offset, first.dt_s, first.image_hw)
        scenes = list(dict.fromkeys(s for p in parts for s in p.scenes))
        texts = list(dict.fromkeys(t for p in parts for t in p.instructions))
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("episode", "scene", "success", "instruction")}
        next_episode = 0
        for part in parts:
            if (part.stride, part.offset, part.dt_s, part.image_hw) != key:
                raise DatasetError("VLA sample sets differ in pixel grid or chunk step; collect them alike")
            eps, renumbered = np.unique(part.episode, return_inverse=True)
            cols["episode"].append(renumbered.astype(np.int64) + next_episode)
            # each part's indices mapped through its names onto the merged lists
            cols["scene"].append(np.asarray([scenes.index(n) for n in part.scenes], np.int64)[part.scene])
            text_ids = np.asarray([texts.index(t) for t in part.instructions], np.int64)
            cols["instruction"].append(text_ids[part.instruction])
            cols["success"].append(part.success)
            next_episode += max(len(eps), part.episodes)
        stacked = {k: np.concatenate([getattr(p, k) for p in parts]) for k in _SAMPLE_ARRAYS if k != "instruction"}
        return cls(
            **stacked,
            instruction=np.concatenate(cols["instruction"]),
            episode=np.concatenate(cols["episode"]),
            scene=np.concatenate(cols["scene"]),
            success=np.concatenate(cols["success"]),
            scenes=tuple(scenes),
            instructions=tuple(texts),
            stride=first.stride,
            offset=first.offset,
            dt_s=first.dt_s,
            image_hw=first.image_hw,
        )

    def save(self, path: str | Path) -> Path:
        """Write to an ``.npz`` file (no pickle); return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}
        meta = {
            "scenes": np.array(self.scenes),
            "instructions": np.array(self.instructions),
            "grid": np.array([self.stride, self.offset, *self.image_hw]),
            "dt_s": np.array(self.dt_s),
        }
        np.savez(path, **arrays, **meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> VlaSamples:
        """Read a file written by :meth:`save`. Raises DatasetError for a missing or malformed file."""
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except (OSError, ValueError) as exc:
            raise DatasetError(
                f"cannot read VLA samples {path}: {exc}; collect them with robot-stack train-vla"
            ) from exc
        try:
            grid = [int(v) for v in data.pop("grid")]
            stride, offset = grid[:2]
            height, width = grid[2:4] if len(grid) == 4 else (480, 640)  # files written before the size was kept
            return cls(
                **{k: data[k] for k in _SAMPLE_ARRAYS},
                episode=data["episode"],
                scene=data["scene"],
                success=data["success"],
                scenes=tuple(str(s) for s in data["scenes"]),
                instructions=tuple(str(s) for s in data["instructions"]),
                stride=stride,
                offset=offset,
                dt_s=float(data["dt_s"]),
                image_hw=(height, width),
            )
        except KeyError as exc:
            raise DatasetError(f"VLA samples {path} lack {exc}; re-collect them") from exc


def dart_perturbation(
    rng: np.random.Generator, noise_m: float, probability: float = 0.5
) -> Callable[[ActionChunk, Observation], ActionChunk]:
    """An ``execute`` hook for :meth:`LockstepRig.run_episode`: with ``probability`` the executed chunk drifts to a
    random offset (N(0, ``noise_m``) per axis, ramped over the chunk) — the label stays the clean chunk."""

    def perturb(chunk: ActionChunk, obs: Observation) -> ActionChunk:
        if rng.random() >= probability:
            return chunk
        ramp = np.linspace(0.0, 1.0, chunk.horizon)[:, None]
        offset = rng.normal(0.0, noise_m, 3)
        return ActionChunk(chunk.t_obs_ns, chunk.dt_s, chunk.actions + ramp * offset, chunk.action_space, chunk.gripper)

    return perturb


def collect_vla(
    scenes: Sequence[str],
    episodes: int,
    *,
    seed: int = 0,
    stride: int = 8,
    offset: int = 4,
    noise_m: float = 0.015,
    q_noise_rad: float = 0.1,
    expert: ExpertConfig | None = None,
    max_duration_s: float = 9.0,
    instructions: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    image_hw: tuple[int, int] = (480, 640),
    learner: Learner | None = None,
    beta: float = 0.3,
) -> VlaSamples:
    """Run the expert for ``episodes`` episodes spread evenly over ``scenes`` and ``instructions`` (default: every
    instruction of the suite); episode ``e`` has seed ``seed + e``. ``progress(done, total)`` after each episode.

    With a ``learner`` (DAgger, Ross et al. 2011): at each step the rig executes the learner's chunk, or with
    probability ``beta`` the expert's (with the exploration noise); every visited observation is labelled with the
    expert's clean chunk. The data then cover the states the learner itself reaches, and how to recover from them.
    """
    expert = expert or ExpertConfig(max_speed_mps=0.25)
    texts = tuple(instructions or (i.text for i in INSTRUCTIONS))
    rng = np.random.default_rng(seed)
    explore = dart_perturbation(rng, noise_m)
    execute = explore
    if learner is not None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be within [0, 1], got {beta}")

        def learner_drives(chunk: ActionChunk, obs: Observation) -> ActionChunk:
            return explore(chunk, obs) if rng.random() < beta else learner(obs, obs.task)

        execute = learner_drives

    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("rgb", "depth", "calib", "state", "chunks", "target")}
    idx: dict[str, list[int]] = {"instruction": [], "episode": [], "scene": []}
    success: list[bool] = []
    t0 = time.perf_counter()
    per_scene = [list(range(s, episodes, len(scenes))) for s in range(len(scenes))]
    done = 0
    for s_idx, scene in enumerate(scenes):
        config = vla_scene_config(scene, texts[0], image_hw)
        rig = LockstepRig(config, max_duration_s=max_duration_s, xyz=False)
        try:
            for ep in per_scene[s_idx]:
                i_idx = (ep // len(scenes)) % len(texts)
                rig.task.set_instruction(texts[i_idx])

                def act(obs: Observation, rig: LockstepRig = rig) -> ActionChunk:
                    kind, goal = rig.task.expert_goal()
                    actions = tabletop_expert_actions(obs.state.ee_pose.translation, kind, goal, expert)
                    return ActionChunk(obs.t_obs_ns, expert.dt_s, actions, "ee_delta_xyz", np.ones(expert.horizon))

                def record(
                    obs: Observation,
                    chunk: ActionChunk,
                    rig: LockstepRig = rig,
                    ep: int = ep,
                    i_idx: int = i_idx,
                    s_idx: int = s_idx,
                ) -> None:
                    cam = obs.cameras[0]
                    if cam.depth is None or cam.calib is None:
                        raise DatasetError(f"camera {cam.camera_id!r} has no depth form (lens distortion?)")
                    cols["rgb"].append(np.ascontiguousarray(cam.rgb[offset::stride, offset::stride]))
                    cols["depth"].append(np.ascontiguousarray(cam.depth[offset::stride, offset::stride]))
                    cols["calib"].append(np.asarray(cam.calib))
                    cols["state"].append(obs.state.vector())
                    cols["chunks"].append(np.asarray(chunk.actions, np.float32))
                    cols["target"].append(np.asarray(rig.task.expert_goal()[1], np.float32))
                    idx["instruction"].append(i_idx)
                    idx["episode"].append(ep)
                    idx["scene"].append(s_idx)

                result = rig.run_episode(
                    act, seed + ep, initial_q_noise_rad=q_noise_rad, on_step=record, execute=execute
                )
                success.append(result.success)
                done += 1
                log.info(
                    "episode %d/%d (%s, %r): %s in %d steps, %.0f s elapsed",
                    done,
                    episodes,
                    scene,
                    texts[i_idx],
                    "success" if result.success else "fail",
                    result.steps,
                    time.perf_counter() - t0,
                )
                if progress is not None:
                    progress(done, episodes)
        finally:
            rig.close()
    if not cols["rgb"]:
        raise DatasetError("no samples collected; ask for at least one episode")
    order = np.argsort(np.asarray(idx["episode"]), kind="stable")
    return VlaSamples(
        rgb=np.stack(cols["rgb"])[order],
        depth=np.stack(cols["depth"])[order],
        calib=np.stack(cols["calib"]).astype(np.float32)[order],
        state=np.stack(cols["state"]).astype(np.float32)[order],
        instruction=np.asarray(idx["instruction"], np.int64)[order],
        chunks=np.stack(cols["chunks"])[order],
        target=np.stack(cols["target"])[order],
        episode=np.asarray(idx["episode"], np.int64)[order],
        scene=np.asarray(idx["scene"], np.int64)[order],
        success=np.asarray([success[i] for i in np.argsort(_episode_order(per_scene))], bool),
        scenes=tuple(scenes),
        instructions=texts,
        stride=stride,
        offset=offset,
        dt_s=expert.dt_s,
        image_hw=image_hw,
    )


def _episode_order(per_scene: list[list[int]]) -> list[int]:
    """Episode numbers in the order they ran (scene by scene)."""
    return [ep for eps in per_scene for ep in eps]
