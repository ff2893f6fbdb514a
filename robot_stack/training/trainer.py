"""Behaviour cloning of the visuomotor demo policies (torch, CPU) and their export to ONNX + manifest.

:func:`train_continuous` fits :class:`~robot_stack.training.nets.ContinuousPolicy` by MSE on normalised
``ee_delta_xyz`` chunks; :func:`train_vq` first trains a VQ action tokenizer on the same chunks
(:func:`robot_stack.training.vq_tokenizer.train_tokenizer`, canonical robot at the recording rate), then fits
:class:`~robot_stack.training.nets.TokenPolicy` by cross-entropy on the chunks' token ids. Both export one ONNX
graph (opset 17, unbatched server tensors in, manifest outputs out), write the manifest (normalisation stats,
action head, horizon, dt, control rate) and check that ONNX Runtime, through the project's own
:class:`~robot_stack.policy.runtime.OnnxPolicy`, reproduces the torch model before anything is shipped.

**Several arms** (samples from more than one dataset, ``state_layout == "ee"``): the policy sees only what every arm
shares — images, base-frame XYZ and the TCP xyz + gripper (the last four entries of any arm's
``RobotState.vector()``, taken and normalised inside the graph, so the served ``state`` input has any length). The
``latent_vq`` tokenizer is then conditioned on every described arm (``TrainConfig.robot_types``): its tokens are
end-effector motion in the base frame, and each arm's decoder output is that motion within the arm's TCP speed
(:func:`~robot_stack.training.vq_tokenizer.retime_chunk`) — an arm the policy never saw is still known to its
decoder through its description.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robot_stack.console import report_progress
from robot_stack.errors import ConfigError, PolicyError
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.training.graph_export import OPSET, onnx_bytes, save_program
from robot_stack.training.nets import (
    ContinuousExport,
    ContinuousPolicy,
    TokenExport,
    TokenPolicy,
    VisuomotorTrunk,
)
from robot_stack.training.samples import STRIDE, TrainingSamples
from robot_stack.types import ActionHead

__all__ = [
    "HEADS",
    "OPSET",
    "TrainConfig",
    "TrainResult",
    "export_continuous",
    "export_vq",
    "train",
    "train_continuous",
    "train_vq",
]

log = logging.getLogger("robot_stack.training")

#: The heads this trainer builds; ``"vq"`` is accepted as the old name of ``latent_vq``.
HEADS = (ActionHead.CONTINUOUS, ActionHead.LATENT_VQ)
#: Default model id per head (the shipped files keep their names).
_DEFAULT_IDS = {ActionHead.CONTINUOUS: "reach-visuomotor-continuous", ActionHead.LATENT_VQ: "reach-visuomotor-vq"}


def parse_head(head: ActionHead | str) -> ActionHead:
    """``head`` as one of :data:`HEADS` (``"vq"`` = ``latent_vq``); ConfigError otherwise."""
    parsed = ActionHead.parse("latent_vq" if head == "vq" else head)
    if parsed not in HEADS:
        raise ConfigError(
            f"train: action head {parsed.value!r} is not trained here; choose one of {[h.value for h in HEADS]}"
        )
    return parsed


#: Floors of the normalisation scales: a constant state entry (the gripper) or chunk step (step 0 is always 0).
STATE_STD_FLOOR = 1e-2
#: Width of the hindsight-goal attention target, metres.
GOAL_SIGMA_M = 0.02
ACTION_STD_FLOOR_M = 1e-3


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    Attributes:
        epochs, batch_size, lr, weight_decay: Adam with cosine learning-rate decay.
        keypoints, hidden: trunk size (:class:`~robot_stack.training.nets.VisuomotorTrunk`).
        goal_weight: weight of the auxiliary loss pulling keypoint 0 onto the episode's end TCP
            (:meth:`~robot_stack.training.samples.TrainingSamples.episode_end_tcp`: where the demonstrator touched
            the target; see ``_goal_loss``); 0 disables it.
        val_fraction: fraction of the episodes held out for validation (whole episodes).
        n_tokens, latent_dim, levels, codebook_size: the VQ tokenizer (``vq`` head only; see
            :class:`robot_stack.training.vq_tokenizer.TokenizerConfig`).
        tokenizer_epochs: epochs of the tokenizer's residual MLP.
        control_rate_hz: how often the robot asks for a chunk (manifest ``control_rate_hz``).
        threads: torch intra-op threads. seed: every random choice.
        robot_types: the arms the ``latent_vq`` decoder is conditioned on (empty: the canonical robot only; for
            samples of several arms: every described arm, see the module docstring).
    """

    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-5
    keypoints: int = 8
    hidden: int = 256
    goal_weight: float = 1.0
    val_fraction: float = 0.1
    n_tokens: int = 2
    latent_dim: int = 6
    levels: int = 2
    codebook_size: int = 64
    tokenizer_epochs: int = 25
    control_rate_hz: float = 10.0
    threads: int = 2
    seed: int = 0
    robot_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        manifest_path: the policy manifest (``<out>/<model_id>.yaml``, next to its ``.onnx``).
        tokenizer_path: the VQ tokenizer manifest (``vq`` head only), else None.
        metrics: training report (losses, errors in mm, timings, ONNX consistency).
        model: the trained torch module (:class:`ContinuousPolicy` or :class:`TokenPolicy`, eval mode).
        tokenizer: the trained :class:`~robot_stack.training.vq_tokenizer.VqTokenizer` (``vq`` head), else None.
    """

    manifest_path: Path
    tokenizer_path: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    tokenizer: Any = None


# ------------------------------------------------------------------------------------------------ helpers


def _stats(x: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (floored) over axis 0, float32."""
    x = np.asarray(x, np.float64)
    return x.mean(0).astype(np.float32), np.maximum(x.std(0), floor).astype(np.float32)


def _tensors(samples: TrainingSamples, state_mean: np.ndarray, state_std: np.ndarray) -> dict[str, torch.Tensor]:
    return {
        "rgb": torch.from_numpy(samples.rgb),
        "xyz": torch.from_numpy(samples.xyz),
        "state": torch.from_numpy(((samples.state - state_mean) / state_std).astype(np.float32)),
    }


def _fit(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    loss_fn: Any,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: TrainConfig,
    label: str,
) -> dict[str, float]:
    """Minibatch AdamW with a one-cycle learning rate; returns final train/val losses.

    ``loss_fn(model_output, sample_indices) -> scalar`` (indices: int64 tensor into the sample arrays).
    """
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-len(train_idx) // config.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.1
    )
    tr = torch.from_numpy(train_idx)

    def run(idx: torch.Tensor) -> torch.Tensor:
        return loss_fn(model(inputs["rgb"][idx], inputs["xyz"][idx], inputs["state"][idx]), idx)

    def evaluate(idx: np.ndarray) -> float:
        if len(idx) == 0:
            return float("nan")
        model.eval()
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(idx), 256):
                sel = torch.from_numpy(idx[start : start + 256])
                total += run(sel).item() * len(sel)
        model.train()
        return total / len(idx)

    t0 = time.perf_counter()
    model.train()
    train_loss = float("nan")
    for epoch in range(config.epochs):
        order = tr[torch.randperm(len(tr), generator=gen)]
        running, seen = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            sel = order[start : start + config.batch_size]
            loss = run(sel)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(sel)
            seen += len(sel)
        train_loss = running / max(seen, 1)
        report_progress(f"train {label}", epoch + 1, config.epochs, "epochs", f"loss {train_loss:.4f}")
        if epoch == config.epochs - 1 or epoch % 5 == 0:
            log.debug(
                "%s epoch %d/%d: train %.4f val %.4f (%.0f s)",
                label,
                epoch + 1,
                config.epochs,
                train_loss,
                evaluate(val_idx),
                time.perf_counter() - t0,
            )
    model.eval()
    return {"train_loss": train_loss, "val_loss": evaluate(val_idx), "fit_s": time.perf_counter() - t0}


def _goal_loss(out: tuple[torch.Tensor, ...], goal: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between keypoint 0's attention and a target map over the cells whose base-frame XYZ lies
    near the episode's end TCP (hindsight goal): ``q_i ∝ exp(-|xyz_i - goal|² / (2 σ²))``, σ = :data:`GOAL_SIGMA_M`.

    A per-cell loss (unlike a loss on the attended point) gives every cell a gradient, so a small target is found
    even while the attention is still spread over the whole image."""
    _, _, log_att, pts, mask = out
    d2 = (pts - goal[:, None, :]).square().sum(-1)  # (B, cells)
    target = torch.softmax(-d2 / (2 * GOAL_SIGMA_M**2) + (mask[:, 0] - 1.0) * 1e4, dim=-1)
    return -(target * log_att[:, 0]).sum(-1).mean()


#: Length of the example state of an ``ee``-layout export (any arm's ``RobotState.vector()``; the input is dynamic).
_EE_EXAMPLE_STATE = 11


def _ee(samples: TrainingSamples) -> bool:
    return samples.state_layout == "ee"


def _example(samples: TrainingSamples) -> tuple[torch.Tensor, ...]:
    """Zero server tensors (unbatched, full resolution): the export examples."""
    h, w = samples.image_shape
    return (
        torch.zeros(h, w, 3, dtype=torch.uint8),
        torch.zeros(h, w, 3, dtype=torch.float32),
        torch.zeros(_EE_EXAMPLE_STATE if _ee(samples) else samples.state.shape[1], dtype=torch.float32),
    )


def _write_torch_program(module: nn.Module, samples: TrainingSamples, path: Path) -> Path:
    """Export ``module`` (same contract as the ONNX graph) with ``torch.export`` to ``path`` (``.pt2``): the program
    ``serve --engine torch`` runs (:mod:`robot_stack.policy.torch_engine`). An ``ee``-layout policy's state length
    stays dynamic (every arm sends its own)."""
    dynamic = None
    if _ee(samples):
        dynamic = (None, None, {0: torch.export.Dim("state_len", min=4, max=64)})
    return save_program(module, _example(samples), dynamic, path)


def _onnx_bytes(module: nn.Module, samples: TrainingSamples, output: str) -> bytes:
    """Export ``module`` (unbatched server tensors -> ``output``) with the TorchScript exporter at :data:`OPSET`."""
    return onnx_bytes(
        module,
        _example(samples),
        [f"{samples.camera}/rgb", f"{samples.camera}/xyz", "state"],
        [output],
        {"state": {0: "state_len"}} if _ee(samples) else None,
    )


def _full_resolution(samples: TrainingSamples, i: int) -> dict[str, np.ndarray]:
    """Server arrays whose in-graph subsampling gives back sample ``i`` exactly (pixel replication)."""
    h, w = samples.image_shape

    def up(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.repeat(np.repeat(a, STRIDE, 0), STRIDE, 1)[:h, :w])

    state = samples.state[i].astype(np.float32)
    if _ee(samples):  # what an arm sends: its joints (any number; here six made-up ones) before the shared part
        state = np.concatenate([np.linspace(-1.0, 1.0, 6, dtype=np.float32), state])
    return {
        f"{samples.camera}/rgb": up(samples.rgb[i]),
        f"{samples.camera}/xyz": up(samples.xyz[i]),
        "state": state,
    }


def _inputs_doc(samples: TrainingSamples) -> list[dict[str, Any]]:
    h, w = samples.image_shape
    return [
        {"name": f"{samples.camera}/rgb", "dtype": "uint8", "shape": [h, w, 3]},
        {"name": f"{samples.camera}/xyz", "dtype": "float32", "shape": [h, w, 3], "allow_nonfinite": True},
        {"name": "state", "dtype": "float32", "shape": [-1 if _ee(samples) else samples.state.shape[1]]},
    ]


def _state_normalization(samples: TrainingSamples, trunk: VisuomotorTrunk) -> dict[str, Any]:
    """The manifest's state normalisation: the trunk's stats for a one-arm policy; none for an ``ee`` policy (its
    graph takes the shared part of any arm's state and normalises it itself)."""
    if _ee(samples):
        return {}
    return {"state": {"mean": trunk.state_mean.tolist(), "std": trunk.state_std.tolist()}}


def _arms_text(samples: TrainingSamples) -> str:
    return f" of {', '.join(samples.robots)}" if len(samples.robots) > 1 else ""


def _trunk(samples: TrainingSamples, train_idx: np.ndarray, config: TrainConfig) -> tuple[VisuomotorTrunk, Any]:
    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, config.threads))
    state_mean, state_std = _stats(samples.state[train_idx], STATE_STD_FLOOR)
    trunk = VisuomotorTrunk(torch.from_numpy(state_mean), torch.from_numpy(state_std), config.keypoints, config.hidden)
    return trunk, (state_mean, state_std)


def _probe_indices(samples: TrainingSamples, n: int = 6) -> np.ndarray:
    return np.linspace(0, len(samples) - 1, min(n, len(samples))).round().astype(np.int64)


# --------------------------------------------------------------------------------------------- continuous


def train_continuous(
    samples: TrainingSamples,
    out_dir: str | Path,
    model_id: str,
    config: TrainConfig = TrainConfig(),  # noqa: B008
) -> TrainResult:
    """Train the continuous-chunk policy on ``samples`` and export ``<out_dir>/<model_id>.{onnx,yaml}``."""
    t0 = time.perf_counter()
    train_idx, val_idx = samples.split(config.val_fraction, config.seed)
    trunk, (state_mean, state_std) = _trunk(samples, train_idx, config)
    horizon = samples.horizon
    flat = samples.chunks.reshape(len(samples), -1)
    act_mean, act_std = _stats(flat[train_idx], ACTION_STD_FLOOR_M)
    span = flat.max(0) - flat.min(0)
    low = ((flat.min(0) - 0.1 * span - 1e-3 - act_mean) / act_std).reshape(horizon, 3)
    high = ((flat.max(0) + 0.1 * span + 1e-3 - act_mean) / act_std).reshape(horizon, 3)
    model = ContinuousPolicy(trunk, horizon, torch.from_numpy(low), torch.from_numpy(high))
    inputs = _tensors(samples, state_mean, state_std)
    targets = torch.from_numpy(((flat - act_mean) / act_std).astype(np.float32).reshape(-1, horizon, 3))
    goal = torch.from_numpy(samples.episode_end_tcp())

    def loss_fn(out: tuple[torch.Tensor, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(out[0], targets[idx]) + config.goal_weight * _goal_loss(out, goal[idx])

    fit = _fit(model, inputs, loss_fn, train_idx, val_idx, config, "continuous")

    metrics: dict[str, Any] = {"head": "continuous", "samples": len(samples), "episodes": samples.episodes, **fit}
    with torch.no_grad():
        for name, idx in (("train", train_idx), ("val", val_idx)):
            if len(idx):
                sel = torch.from_numpy(idx)
                pred, kp, *_ = model(inputs["rgb"][sel], inputs["xyz"][sel], inputs["state"][sel])
                pred = pred.numpy()
                metrics[f"{name}_goal_keypoint_err_mm"] = float(
                    1000.0 * np.median(np.linalg.norm(kp[:, 0].numpy() - goal[sel].numpy(), axis=1))
                )
                err = (pred.reshape(len(idx), -1) * act_std + act_mean - flat[idx]).reshape(-1, 3)
                metrics[f"{name}_rmse_mm"] = float(1000.0 * np.sqrt(np.mean(np.sum(err**2, axis=1))))
    description = (
        f"Visuomotor reach policy (robot-stack train --head continuous): CNN on {STRIDE}x-subsampled RGB + "
        f"base-frame XYZ, {config.keypoints} spatial-softmax keypoints in the base frame, MLP {config.hidden}x2; "
        f"behaviour-cloned on {len(samples)} samples from {samples.episodes} recorded episodes."
    )
    path = export_continuous(model, samples, out_dir, model_id, act_mean, act_std, config, description)
    metrics["onnx_max_abs_err_m"] = _check_served(path, model, samples, act_mean, act_std)
    metrics["total_s"] = time.perf_counter() - t0
    return TrainResult(path, None, _rounded(metrics), model)


def export_continuous(
    model: ContinuousPolicy,
    samples: TrainingSamples,
    out_dir: str | Path,
    model_id: str,
    act_mean: np.ndarray,
    act_std: np.ndarray,
    config: TrainConfig,
    description: str = "",
) -> Path:
    """Write ``<model_id>.onnx``, its torch program ``<model_id>.pt2`` and ``<model_id>.yaml`` (state and action
    normalisation in the manifest)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _write_policy(
        ContinuousExport(model, ee_state=_ee(samples)),
        samples,
        out,
        model_id,
        output={"name": "actions", "dtype": "float32", "shape": [samples.horizon, 3]},
        head={"action_space": "ee_delta_xyz", "action_head": ActionHead.CONTINUOUS.value, "horizon": samples.horizon},
        normalization={
            **_state_normalization(samples, model.trunk),
            "actions": {
                "mean": act_mean.reshape(samples.horizon, 3).tolist(),
                "std": act_std.reshape(samples.horizon, 3).tolist(),
            },
        },
        config=config,
        description=description,
    )


def _write_policy(
    export: nn.Module,
    samples: TrainingSamples,
    out: Path,
    model_id: str,
    *,
    output: Mapping[str, Any],
    head: Mapping[str, Any],
    normalization: Mapping[str, Any],
    config: TrainConfig,
    description: str,
) -> Path:
    """Write ``<model_id>.onnx`` (traced ``export`` with its one ``output``), its torch program ``<model_id>.pt2``
    and the manifest ``<model_id>.yaml`` (``head``: ``action_space``, ``action_head``, ``horizon``); return the
    manifest's path."""
    onnx_path = out / f"{model_id}.onnx"
    onnx_path.write_bytes(_onnx_bytes(export, samples, str(output["name"])))
    program = _write_torch_program(export, samples, out / f"{model_id}.pt2")
    manifest = PolicyManifest.from_dict(
        {
            "model_id": model_id,
            "onnx": onnx_path.name,
            "inputs": _inputs_doc(samples),
            "outputs": [dict(output)],
            **head,
            "dt_s": samples.dt_s,
            "control_rate_hz": config.control_rate_hz,
            "normalization": dict(normalization),
            "providers": ["cpu"],
            "description": description,
            "torch": {"program": program.name},
        },
        base_dir=out,
    )
    return manifest.save(out / f"{model_id}.yaml")


def _check_served(
    manifest_path: Path, model: nn.Module, samples: TrainingSamples, act_mean: np.ndarray, act_std: np.ndarray
) -> float:
    """Max |ONNX Runtime (via OnnxPolicy, manifest normalisation) - torch| over probe samples, metres."""
    from robot_stack.policy.runtime import OnnxPolicy

    policy = OnnxPolicy(PolicyManifest.load(manifest_path), "cpu", intra_op_threads=1)
    m = policy.manifest
    worst = 0.0
    for i in _probe_indices(samples):
        arrays = _full_resolution(samples, int(i))
        served = policy.run(arrays)["actions"]
        with torch.no_grad():
            ref = ContinuousExport(model, ee_state=_ee(samples))(
                *(torch.from_numpy(np.asarray(a)) for a in _normalised_feed(m, arrays))
            ).numpy()
        ref = ref * act_std.reshape(ref.shape) + act_mean.reshape(ref.shape)
        worst = max(worst, float(np.abs(served - ref).max()))
    if worst > 1e-4:
        raise PolicyError(f"exported ONNX graph differs from the torch model by {worst * 1000:.3f} mm; not shipping it")
    return worst


def _normalised_feed(manifest: PolicyManifest, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    from robot_stack.policy.runtime import normalize_inputs

    feed = normalize_inputs(manifest, arrays)
    return [feed[t.name] for t in manifest.inputs]


# ------------------------------------------------------------------------------------------------------ VQ


def _tokenizer(samples: TrainingSamples, train_idx: np.ndarray, config: TrainConfig) -> Any:
    """Train a VQ tokenizer on the recorded chunks at the recording rate: for the canonical robot only, or with
    ``config.robot_types`` for those arms (each sample's decoder target: its chunk within a random arm's TCP speed)."""
    from robot_stack.training.vq_tokenizer import (
        EMBODIMENTS,
        TokenizerConfig,
        TokenizerData,
        arm_profiles,
        retime_chunk,
        train_tokenizer,
    )

    n = len(samples)
    if len(train_idx) < max(config.codebook_size, config.n_tokens * config.latent_dim + 1):
        raise ConfigError(
            f"VQ tokenizer: {len(train_idx)} training chunks cannot fill a codebook of {config.codebook_size} codes "
            f"nor span a {config.n_tokens}x{config.latent_dim} latent; record more episodes or pass a smaller "
            "--codebook-size"
        )
    rate = 1.0 / samples.dt_s
    tok_config = TokenizerConfig(
        n_tokens=config.n_tokens,
        latent_dim=config.latent_dim,
        levels=config.levels,
        codebook_size=config.codebook_size,
        n_states=n,
        horizon=samples.horizon,
        canonical_rate_hz=rate,
        rate_range_hz=(rate, rate),
        epochs=config.tokenizer_epochs,
        seed=config.seed,
        embodiments=arm_profiles(config.robot_types) if config.robot_types else (EMBODIMENTS[0],),
    )
    chunks = samples.chunks.astype(np.float64)
    held_out = np.setdiff1d(np.arange(n), train_idx)
    if len(held_out) == 0:  # one episode only: evaluate on the training chunks rather than on nothing
        held_out = train_idx[: max(1, len(train_idx) // 10)]
    robot = np.zeros(n, np.int64)
    conditioned = chunks
    if config.robot_types:
        robot = np.random.default_rng(config.seed + 7).integers(0, len(config.robot_types), n)
        conditioned = chunks.copy()
        for r, profile in enumerate(tok_config.embodiments):
            sel = robot == r
            conditioned[sel] = retime_chunk(chunks[sel], profile.max_speed_mps, samples.dt_s)
    data = TokenizerData(
        tcp=samples.state[:, -4:-1].astype(np.float64),
        cube=np.full((n, 3), np.nan),  # not recorded as an observation; the tokenizer only reads the chunks
        train=np.sort(train_idx),
        held_out=np.sort(held_out),
        canonical=chunks,
        robot=robot,
        rate_hz=np.full(n, rate),
        conditioned=conditioned,
    )
    return train_tokenizer(tok_config, data)


def train_vq(
    samples: TrainingSamples,
    out_dir: str | Path,
    model_id: str,
    config: TrainConfig = TrainConfig(),  # noqa: B008
) -> TrainResult:
    """Train a VQ tokenizer and a token-classifying policy; export policy, tokenizer and both manifests.

    Files: ``<model_id>.onnx`` + ``<model_id>.yaml`` (policy, ``action_head: latent_vq``, output ``tokens``) and
    ``<model_id>-tokenizer.{encoder,decoder}.onnx`` + ``<model_id>-tokenizer.yaml`` (decode with
    ``get_decoder("latent_vq", manifest=<that yaml>)``).
    """
    t0 = time.perf_counter()
    train_idx, val_idx = samples.split(config.val_fraction, config.seed)
    tok = _tokenizer(samples, train_idx, config)
    ids = tok.encode(samples.chunks)  # (N, T, L) int64
    trunk, (state_mean, state_std) = _trunk(samples, train_idx, config)
    model = TokenPolicy(trunk, config.n_tokens, config.levels, config.codebook_size)
    inputs = _tensors(samples, state_mean, state_std)
    targets = torch.from_numpy(ids.reshape(len(samples), -1))
    goal = torch.from_numpy(samples.episode_end_tcp())

    def loss_fn(out: tuple[torch.Tensor, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.cross_entropy(out[0].reshape(-1, config.codebook_size), targets[idx].reshape(-1))
        return ce + config.goal_weight * _goal_loss(out, goal[idx])

    fit = _fit(model, inputs, loss_fn, train_idx, val_idx, config, "vq")
    metrics: dict[str, Any] = {
        "head": ActionHead.LATENT_VQ.value,
        "samples": len(samples),
        "episodes": samples.episodes,
        **fit,
        "tokenizer": {k: v for k, v in tok.metrics.items() if not isinstance(v, list)},
    }
    with torch.no_grad():
        for name, idx in (("train", train_idx), ("val", val_idx)):
            if len(idx):
                sel = torch.from_numpy(idx)
                logits = model(inputs["rgb"][sel], inputs["xyz"][sel], inputs["state"][sel])[0]
                pred = logits.argmax(-1).numpy().reshape(len(idx), config.n_tokens, config.levels)
                metrics[f"{name}_token_accuracy"] = float((pred == ids[idx]).mean())
                err = tok.decode(pred) - samples.chunks[idx]
                metrics[f"{name}_rmse_mm"] = float(1000.0 * np.sqrt(np.mean(np.sum(err.reshape(-1, 3) ** 2, 1))))
    tokenizer_id = f"{model_id}-tokenizer"
    description = (
        f"Visuomotor reach policy with a latent-token head (robot-stack train --head vq): the trunk of the "
        f"continuous policy ({config.keypoints} base-frame keypoints from {STRIDE}x-subsampled RGB + XYZ) and one "
        f"{config.codebook_size}-way classifier per token and level of the VQ tokenizer {tokenizer_id} "
        f"({config.n_tokens} tokens x {config.levels} levels), both trained on {len(samples)} samples from "
        f"{samples.episodes} recorded episodes. Decode with get_decoder('latent_vq', manifest='{tokenizer_id}.yaml')."
    )
    if config.robot_types:
        description += (
            f" Trained on episodes{_arms_text(samples) or ' of ' + ', '.join(samples.robots)}; the embodiment decoder "
            f"knows {', '.join(config.robot_types)} (the served state: any arm's, its TCP xyz and gripper are used)."
        )
    path, tok_path = export_vq(model, tok, samples, out_dir, model_id, config, description)
    metrics["onnx_token_mismatches"] = _check_tokens_served(path, model, samples)
    metrics["total_s"] = time.perf_counter() - t0
    return TrainResult(path, tok_path, _rounded(metrics), model, tok)


def export_vq(
    model: TokenPolicy,
    tokenizer: Any,
    samples: TrainingSamples,
    out_dir: str | Path,
    model_id: str,
    config: TrainConfig,
    description: str = "",
) -> tuple[Path, Path]:
    """Write the token policy (``<model_id>.{onnx,yaml}``) and its tokenizer (``<model_id>-tokenizer.*``)."""
    from robot_stack.training.vq_tokenizer import export_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_id = f"{model_id}-tokenizer"
    tok_path = export_tokenizer(
        tokenizer,
        out,
        tokenizer_id,
        f"VQ action tokenizer trained by robot-stack train on {len(samples)} recorded chunks "
        f"({samples.episodes} episodes{_arms_text(samples)}) at {1.0 / samples.dt_s:g} Hz; decoder conditioned on "
        f"{', '.join(tokenizer.robot_types)}.",
    )
    path = _write_policy(
        TokenExport(model, ee_state=_ee(samples)),
        samples,
        out,
        model_id,
        output={"name": "tokens", "dtype": "int64", "shape": [config.n_tokens, config.levels]},
        head={
            "action_space": ActionHead.LATENT_VQ.value,
            "action_head": ActionHead.LATENT_VQ.value,
            "horizon": config.n_tokens,
        },
        normalization=_state_normalization(samples, model.trunk),
        config=config,
        description=description,
    )
    return path, tok_path


def _check_tokens_served(manifest_path: Path, model: TokenPolicy, samples: TrainingSamples) -> int:
    """Count probe samples whose ONNX Runtime tokens differ from torch's (ties may flip; many is an error)."""
    from robot_stack.policy.runtime import OnnxPolicy

    policy = OnnxPolicy(PolicyManifest.load(manifest_path), "cpu", intra_op_threads=1)
    probes = _probe_indices(samples)
    mismatches = 0
    for i in probes:
        arrays = _full_resolution(samples, int(i))
        served = policy.run(arrays)["tokens"]
        with torch.no_grad():
            ref = TokenExport(model, ee_state=_ee(samples))(
                *(torch.from_numpy(a) for a in _normalised_feed(policy.manifest, arrays))
            )
        mismatches += int(not np.array_equal(served, ref.numpy()))
    if mismatches > len(probes) // 2:
        raise PolicyError(
            f"exported token policy disagrees with torch on {mismatches}/{len(probes)} probes; not shipping it"
        )
    return mismatches


# ------------------------------------------------------------------------------------------------- entry


def train(
    samples: TrainingSamples,
    head: ActionHead | str,
    out_dir: str | Path,
    model_id: str | None = None,
    config: TrainConfig = TrainConfig(),  # noqa: B008
) -> TrainResult:
    """Train and export the ``head`` policy (``continuous`` | ``latent_vq``); default model id
    ``reach-visuomotor-continuous`` / ``reach-visuomotor-vq``."""
    head = parse_head(head)
    model_id = model_id or _DEFAULT_IDS[head]
    fn = train_continuous if head is ActionHead.CONTINUOUS else train_vq
    result = fn(samples, out_dir, model_id, config)
    log.info("trained %s: %s", model_id, result.metrics)
    return replace(result, metrics={**result.metrics, "config": asdict(config)})


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out[k] = _rounded(v)
        elif isinstance(v, float):
            out[k] = round(v, 6) if abs(v) < 1e-2 else round(v, 4)
        else:
            out[k] = v
    return out
