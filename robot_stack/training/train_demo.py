"""``robot-stack train-demo``: build the demo policy from scratch with the stack's own tooling.

1. **Collect** demonstrations in the lockstep simulator: the scripted expert (which sees ground truth) labels
   every observation with an ``ee_delta_xyz`` chunk; the executed chunk carries exploration noise and the arm starts
   from perturbed poses, so the data covers recoveries (DART-style noise injection).
2. **Featurise** each observation exactly as the ONNX graph will (:func:`reach_model.features_numpy`).
3. **Train** the MLP head by behaviour cloning (numpy, Adam).
4. **Export** one ONNX graph (colour-keyed localisation + MLP) and its manifest, check that ONNX Runtime reproduces
   the numpy model, and optionally **evaluate** the exported model closed-loop in the lockstep simulator.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.console import report_progress
from robot_stack.errors import PolicyError
from robot_stack.policy.manifest import SHIPPED_MODELS_DIR, PolicyManifest
from robot_stack.sim.expert import ExpertConfig, expert_actions
from robot_stack.stack.lockstep import EpisodeResult, LockstepRig
from robot_stack.training.reach_model import (
    FEATURE_DIM,
    STATE_DIM,
    MlpParams,
    build_onnx,
    features_numpy,
    train_mlp,
)
from robot_stack.types import ActionChunk, Observation

log = logging.getLogger("robot_stack.policy.train_demo")

#: Where the shipped demo model lives (package data).
MODELS_DIR = SHIPPED_MODELS_DIR
DEFAULT_MODEL_ID = "reach-touch-v1"


@dataclass(frozen=True)
class Dataset:
    """Behaviour-cloning data. features: (N, 10) float32; actions: (N, horizon, 3) float32 metres."""

    features: np.ndarray
    actions: np.ndarray
    episodes: int
    expert_successes: int
    probes: tuple[dict[str, np.ndarray], ...] = ()


def collect(episodes: int, seed: int = 0, noise_m: float = 0.02, q_noise_rad: float = 0.15) -> Dataset:
    """Run the expert (with exploration noise) for ``episodes`` episodes; return features and clean labels."""
    rig = LockstepRig()
    config = ExpertConfig(max_speed_mps=0.25)
    rng = np.random.default_rng(seed)
    feats: list[np.ndarray] = []
    labels: list[np.ndarray] = []

    def expert(obs: Observation) -> ActionChunk:
        actions = expert_actions(obs.state.ee_pose.translation, rig.task.cube_top_center(), config)
        return ActionChunk(obs.t_obs_ns, config.dt_s, actions, "ee_delta_xyz", np.ones(config.horizon))

    probes: list[dict[str, np.ndarray]] = []

    def record(obs: Observation, chunk: ActionChunk) -> None:
        cam = obs.cameras[0]
        if len(feats) % 50 == 0 and len(probes) < 8:
            probes.append(obs.arrays())
        feats.append(features_numpy(cam.rgb, cam.xyz_base, obs.state.vector()))
        labels.append(np.asarray(chunk.actions))

    def perturb(chunk: ActionChunk, obs: Observation) -> ActionChunk:
        if rng.random() < 0.5:
            return chunk
        ramp = np.linspace(0.0, 1.0, chunk.horizon)[:, None]
        offset = rng.normal(0.0, noise_m, 3)
        return ActionChunk(chunk.t_obs_ns, chunk.dt_s, chunk.actions + ramp * offset, chunk.action_space, chunk.gripper)

    successes = 0
    try:
        for ep in range(episodes):
            result = rig.run_episode(
                expert, seed + ep, initial_q_noise_rad=q_noise_rad, on_step=record, execute=perturb
            )
            successes += int(result.success)
            log.debug(
                "episode %d/%d: %s (%d steps)", ep + 1, episodes, "success" if result.success else "fail", result.steps
            )
            report_progress("collect expert episodes", ep + 1, episodes, "episodes", f"success {successes}/{ep + 1}")
    finally:
        rig.close()
    return Dataset(np.stack(feats), np.stack(labels), episodes, successes, tuple(probes))


def export(params: MlpParams, out_dir: Path, model_id: str = DEFAULT_MODEL_ID, description: str = "") -> Path:
    """Write ``<out_dir>/<model_id>.onnx`` and its manifest ``.yaml``; return the manifest path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{model_id}.onnx"
    model = build_onnx(params, "front", 480, 640, model_id)
    onnx_path.write_bytes(model.SerializeToString())
    manifest = PolicyManifest.from_dict(
        {
            "model_id": model_id,
            "onnx": onnx_path.name,
            "inputs": [
                {"name": "front/rgb", "dtype": "uint8", "shape": [480, 640, 3]},
                {"name": "front/xyz", "dtype": "float32", "shape": [480, 640, 3], "allow_nonfinite": True},
                {"name": "state", "dtype": "float32", "shape": [STATE_DIM]},
            ],
            "outputs": [
                {"name": "actions", "dtype": "float32", "shape": [params.horizon, 3]},
                {"name": "features", "dtype": "float32", "shape": [FEATURE_DIM]},
            ],
            "action_space": "ee_delta_xyz",
            "action_head": "continuous",
            "horizon": params.horizon,
            "dt_s": params.dt_s,
            "control_rate_hz": 10,
            "providers": ["tensorrt", "cuda", "cpu"],
            "description": description,
        },
        base_dir=out_dir,
    )
    manifest_path = out_dir / f"{model_id}.yaml"
    manifest.save(manifest_path)
    return manifest_path


def onnx_policy_fn(manifest_path: Path) -> Any:
    """A lockstep policy function running the exported model in-process with ONNX Runtime."""
    from robot_stack.policy.runtime import OnnxPolicy

    policy = OnnxPolicy(PolicyManifest.load(manifest_path), provider="cpu")
    m = policy.manifest

    def act(obs: Observation) -> ActionChunk:
        out = policy.run(obs.arrays())
        return ActionChunk(obs.t_obs_ns, m.dt_s, out["actions"], m.action_space, np.ones(m.horizon), m.model_id)

    return act


def evaluate(manifest_path: Path, episodes: int, seed: int = 1000) -> list[EpisodeResult]:
    """Closed-loop success of the exported model on ``episodes`` randomised lockstep episodes."""
    rig = LockstepRig()
    try:
        act = onnx_policy_fn(manifest_path)
        results: list[EpisodeResult] = []
        for i in range(episodes):
            results.append(rig.run_episode(act, seed + i))
            ok = sum(r.success for r in results)
            report_progress("evaluate", i + 1, episodes, "episodes", f"success {ok}/{i + 1}")
        return results
    finally:
        rig.close()


def train_demo(
    out_dir: Path = MODELS_DIR,
    episodes: int = 40,
    epochs: int = 200,
    eval_episodes: int = 10,
    seed: int = 0,
    model_id: str = DEFAULT_MODEL_ID,
) -> dict[str, Any]:
    """Collect, train, export, verify, evaluate. Returns a report dict (also logged)."""
    t0 = time.perf_counter()
    data = collect(episodes, seed=seed)
    t_collect = time.perf_counter() - t0
    horizon = data.actions.shape[1]
    params, metrics = train_mlp(
        data.features, data.actions.reshape(len(data.actions), -1), horizon=horizon, dt_s=0.1, epochs=epochs, seed=seed
    )
    t_train = time.perf_counter() - t0 - t_collect
    description = (
        "Reach-and-touch policy: colour-keyed localisation on base-frame XYZ + MLP "
        f"{[w.shape[1] for w in params.weights]}"
        f" trained by behaviour cloning on {len(data.features)} samples from {episodes} scripted-expert episodes."
    )
    manifest_path = export(params, out_dir, model_id, description)

    # The exported graph must compute what the numpy model computes, on real observations.
    from robot_stack.policy.runtime import OnnxPolicy

    policy = OnnxPolicy(PolicyManifest.load(manifest_path), provider="cpu")
    max_err = 0.0
    for arrays in data.probes:
        onnx_actions = policy.run(arrays)["actions"]
        ref = params.predict(features_numpy(arrays["front/rgb"], arrays["front/xyz"], arrays["state"])[None])[0]
        max_err = max(max_err, float(np.abs(onnx_actions - ref).max()))
    if max_err > 1e-3:  # float32 graph vs float64 reference: sub-millimetre; a wrong graph is off by centimetres
        raise PolicyError(f"exported ONNX graph disagrees with the trained model by {max_err:.2e} m; not shipping it")

    results = evaluate(manifest_path, eval_episodes) if eval_episodes > 0 else []
    report = {
        "manifest": str(manifest_path),
        "samples": int(len(data.features)),
        "episodes": episodes,
        "expert_success_rate": data.expert_successes / max(1, episodes),
        "collect_s": round(t_collect, 1),
        "train_s": round(t_train, 1),
        **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()},
        "eval_episodes": len(results),
        "eval_success_rate": (sum(r.success for r in results) / len(results)) if results else None,
        "numpy_consistency_max_abs": max_err,
    }
    log.debug("train-demo report: %s", report)
    return report
