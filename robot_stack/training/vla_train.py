"""Training the VLA (torch, CPU): flow matching on the expert's chunks, an auxiliary target readout, AdamW.

Per step, a batch of observations goes through the prefix encoder once; the action expert is trained on
``noise_draws`` (time, noise) pairs per observation on that same prefix (the expert is cheap next to the prefix, so
each image teaches the flow several times): ``x_t = (1 - t) noise + t a``, loss ``|v(x_t, t) - (a - noise)|^2``
with ``t = 1 - 0.999 Beta(1.5, 1)`` (more weight on noisy times, as pi0 does) on normalised chunks. Two goal
losses ground the instruction in the image: the goal pointer's point is pulled onto the instruction's target point
(in the model's frame; smooth L1), and its attention onto the pixels whose points lie near that target
(cross-entropy against a Gaussian of 2 cm over the pixels' points). The served model uses the pointer's goal, so
these losses train a part of the served graph, not a side head.

The action expert's goal offset (:meth:`~robot_stack.training.vla_model.VlaModel.goal_offset`) is trained on the
true target plus ``goal_noise_m`` of Gaussian noise (teacher forcing: the expert learns the clean map from offset to
chunk, and tolerates a pointer a few millimetres off); the served model feeds it the pointer's goal.
``expert_only`` fine-tunes the action expert alone on a trained prefix (computed without gradients: about twice as
many steps per minute), as after adding the offset to a trained model.

The learning rate warms up and decays on a cosine over the run; the run's progress is ``max(step / steps, elapsed /
time_budget_s)``, so a time budget shortens the schedule rather than cutting it off.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robot_stack.errors import ConfigError
from robot_stack.training.vla_data import VlaSamples
from robot_stack.training.vla_model import (
    _CENTRE,
    _NEG,
    _SCALE,
    EXPERT_PARTS,
    Prefix,
    VlaConfig,
    VlaModel,
    depth_to_points,
)

__all__ = ["Normalization", "VlaTrainConfig", "VlaTrained", "load_state", "train_vla_model"]

log = logging.getLogger("robot_stack.training.vla")

STATE_STD_FLOOR = 1e-2
ACTION_STD_FLOOR_M = 1e-3


@dataclass(frozen=True)
class VlaTrainConfig:
    """Hyper-parameters of one run.

    Attributes:
        steps: optimiser steps (at most). time_budget_s: wall-clock budget of the fit (None = steps only).
        batch_size, noise_draws: observations per step, (time, noise) pairs per observation.
        lr, weight_decay, warmup_steps: AdamW with warm-up and cosine decay.
        fresh_lr_scale: on a warm start, the learning rate of the parameters the warm start did not hold (a part
            added since) is ``lr`` times this, so a new part catches up with the trained ones within the run.
        aux_weight: weight of the goal point loss. pointer_weight: weight of the pointer's attention loss.
        goal_noise_m: standard deviation (metres, per axis) of the noise on the target the expert is trained with.
        expert_only: train the action expert alone (the prefix frozen; flow loss only).
        fresh_expert: on a warm start, re-initialise the action expert (:data:`~robot_stack.training.vla_model
            .EXPERT_PARTS`) and train it at ``lr``: a suffix trained without the goal offset has learnt to read the
            goal from absolute features, and keeps leaning on them.
        val_fraction: episodes held out. threads: torch intra-op threads. seed: every random choice.
    """

    steps: int = 4000
    time_budget_s: float | None = None
    batch_size: int = 48
    noise_draws: int = 4
    lr: float = 1.5e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    fresh_lr_scale: float = 4.0
    aux_weight: float = 0.5
    pointer_weight: float = 0.1
    goal_noise_m: float = 0.003
    expert_only: bool = False
    fresh_expert: bool = False
    val_fraction: float = 0.08
    threads: int = 1
    seed: int = 0


@dataclass(frozen=True)
class Normalization:
    """Statistics of the training set: state (11,), actions (horizon, 3) — mean and std, float32."""

    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray


@dataclass
class VlaTrained:
    """A trained model with its normalisation, the run's metrics and the data split."""

    model: VlaModel
    norm: Normalization
    metrics: dict[str, Any] = field(default_factory=dict)
    val_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _normalization(samples: VlaSamples, idx: np.ndarray) -> Normalization:
    state = samples.state[idx].astype(np.float64)
    chunks = samples.chunks[idx].astype(np.float64)
    return Normalization(
        state.mean(0).astype(np.float32),
        np.maximum(state.std(0), STATE_STD_FLOOR).astype(np.float32),
        chunks.mean(0).astype(np.float32),
        np.maximum(chunks.std(0), ACTION_STD_FLOOR_M).astype(np.float32),
    )


def target_in_model_frame(target: torch.Tensor, calib: torch.Tensor, frame: str) -> torch.Tensor:
    """Base-frame points (B, 3) -> the model's normalised frame (base, or the camera's optical frame)."""
    if frame == "camera":
        rot = calib[:, 5:14].reshape(-1, 3, 3)
        target = ((target - calib[:, 14:17]).unsqueeze(1) @ rot).squeeze(1)  # R^T (p - t)
    return (target - torch.tensor(_CENTRE[frame])) * _SCALE


class _Batches:
    """The samples as tensors and the pieces of one training step."""

    def __init__(self, samples: VlaSamples, ids: np.ndarray, norm: Normalization, config: VlaConfig) -> None:
        self.config = config
        self.rgb = torch.from_numpy(samples.rgb)
        self.depth = torch.from_numpy(samples.depth.astype(np.int32))
        self.calib = torch.from_numpy(samples.calib)
        self.ids = torch.from_numpy(ids[samples.instruction].astype(np.int64))
        self.state = torch.from_numpy(((samples.state - norm.state_mean) / norm.state_std).astype(np.float32))
        self.actions = torch.from_numpy(((samples.chunks - norm.action_mean) / norm.action_std).astype(np.float32))
        self.target = torch.from_numpy(samples.target.astype(np.float32))

    def prefix(self, model: VlaModel, sel: torch.Tensor) -> Prefix:
        points, valid = depth_to_points(self.depth[sel], self.calib[sel], self.config)
        return model.prefix(self.rgb[sel], points, valid, self.ids[sel])


def _flow_times(gen: torch.Generator, n: int) -> torch.Tensor:
    """(n, 1) flow times ``1 - 0.999 s`` with ``s ~ Beta(1.5, 1)`` (inverse CDF: ``s = u^(2/3)``)."""
    u = torch.rand((n, 1), generator=gen)
    return 1.0 - 0.999 * u ** (2.0 / 3.0)


#: Width of the pointer's target distribution over token points (normalised units: 2 cm).
_POINTER_SIGMA = 0.05


def pointer_loss(prefix: Prefix, goal: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the pointer's attention against a Gaussian (``_POINTER_SIGMA``) over the grid's points
    around the target ``goal`` (B, 3) normalised; invalid pixels get no weight."""
    d2 = ((prefix.pixel_points - goal.unsqueeze(1)) ** 2).sum(-1)  # (B, P)
    labels = torch.softmax(-d2 / (2 * _POINTER_SIGMA**2) + (1.0 - prefix.pixel_valid) * _NEG, dim=-1)
    return -(labels * torch.log_softmax(prefix.goal_logits, dim=-1)).sum(-1).mean()


def _step_loss(
    model: VlaModel, data: _Batches, sel: torch.Tensor, tc: VlaTrainConfig, gen: torch.Generator
) -> tuple[torch.Tensor, float, float, float]:
    with torch.set_grad_enabled(not tc.expert_only):
        pre = data.prefix(model, sel)
    n, draws = len(sel), tc.noise_draws
    a = data.actions[sel].repeat(draws, 1, 1)
    noise = torch.randn(a.shape, generator=gen)
    t = _flow_times(gen, n * draws)
    x_t = (1.0 - t[:, :, None]) * noise + t[:, :, None] * a
    state = data.state[sel].repeat(draws, 1)
    goal = target_in_model_frame(data.target[sel], data.calib[sel], model.config.frame)
    told = goal + torch.randn(goal.shape, generator=gen) * (tc.goal_noise_m * _SCALE)
    kv, mask = pre.kv.repeat(draws, 1, 1, 1), pre.mask.repeat(draws, 1)
    v = model.velocity(x_t, t, state, told.repeat(draws, 1), kv, mask)
    flow = nn.functional.mse_loss(v, a - noise)
    aux = nn.functional.smooth_l1_loss(pre.goal, goal, beta=0.05)
    point = pointer_loss(pre, goal)
    # expert_only: the goal losses are only reported (the prefix they measure is frozen)
    loss = flow if tc.expert_only else flow + tc.aux_weight * aux + tc.pointer_weight * point
    return loss, float(flow.item()), float(aux.item()), float(point.item())


@torch.no_grad()
def evaluate_chunks(
    model: VlaModel, data: _Batches, idx: np.ndarray, norm: Normalization, steps: int, seed: int = 0
) -> dict[str, float]:
    """Open-loop errors on samples ``idx``: RMSE (mm, per step) of chunks sampled with ``steps`` Euler steps from
    seeded noise, and the median target readout error (mm, in the model's frame scale)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    errs, aux_errs = [], []
    for start in range(0, len(idx), 128):
        sel = torch.from_numpy(idx[start : start + 128])
        pre = data.prefix(model, sel)
        noise = torch.randn((len(sel), model.config.horizon, model.config.action_dim), generator=gen)
        x = model.sample(data.state[sel], pre.goal, pre.kv, pre.mask, steps, noise)
        pred = x.numpy() * norm.action_std + norm.action_mean
        true = data.actions[sel].numpy() * norm.action_std + norm.action_mean
        errs.append(np.sum((pred - true) ** 2, axis=-1).reshape(-1))
        goal = target_in_model_frame(data.target[sel], data.calib[sel], model.config.frame)
        aux_errs.append(np.linalg.norm((pre.goal - goal).numpy(), axis=-1) / _SCALE)
    model.train()
    return {
        f"chunk_rmse_mm_k{steps}": float(1000.0 * np.sqrt(np.mean(np.concatenate(errs)))),
        "target_readout_median_mm": float(1000.0 * np.median(np.concatenate(aux_errs))),
    }


def load_state(model: VlaModel, path: str | Path, *, partial: bool = False) -> list[str]:
    """Load weights written by a previous run (``<id>.state.pt``, a torch state dict, read with ``weights_only``)
    into ``model``; return the names of the model's parameters the file did not hold.

    ``partial``: a warm start across an architecture change — parameters absent from the file keep their
    initialisation and the file's parameters the model no longer has are ignored; a parameter both hold with
    different shapes is still an error. Raises ConfigError when the file is missing or was written for another
    architecture."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not partial:
            model.load_state_dict(state, strict=True)
            return []
        own = model.state_dict()
        clash = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if clash:
            raise RuntimeError(f"shapes differ for {', '.join(clash)}")
        result = model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        return list(result.missing_keys)
    except (OSError, RuntimeError, KeyError) as exc:
        raise ConfigError(
            f"cannot warm-start the VLA from {path}: {exc}; pass a <id>.state.pt written by robot-stack train-vla "
            "with the same --layers/--d-model/--heads/--frame"
        ) from exc


def train_vla_model(
    samples: VlaSamples,
    config: VlaConfig,
    train_config: VlaTrainConfig,
    instruction_ids: np.ndarray,
    init: str | Path | None = None,
) -> VlaTrained:
    """Fit a :class:`VlaModel` on ``samples`` (``instruction_ids``: (len(samples.instructions), max_tokens) token
    ids of each instruction text), starting from the weights in ``init`` when given (a warm start: the schedule
    runs again from its warm-up). Returns the model (eval mode), its normalisation and metrics."""
    tc = train_config
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    train_idx, val_idx = samples.split(tc.val_fraction, tc.seed)
    norm = _normalization(samples, train_idx)
    data = _Batches(samples, instruction_ids, norm, config)
    model = VlaModel(config)
    fresh: list[str] = []
    if init is not None:
        fresh = load_state(model, init, partial=True)
        log.info("warm start from %s (%d parameters new: %s)", init, len(fresh), ", ".join(fresh) or "none")
        if tc.fresh_expert:
            initial = VlaModel(config).state_dict()
            suffix = {k: v for k, v in initial.items() if k.split(".")[0] in EXPERT_PARTS}
            model.load_state_dict(suffix, strict=False)
            fresh = [k for k in fresh if k not in suffix]
            log.info("action expert re-initialised (%d tensors)", len(suffix))
    model.set_state_statistics(torch.from_numpy(norm.state_mean), torch.from_numpy(norm.state_std))
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        groups.setdefault((param.ndim >= 2 and "pos" not in name, name in fresh), []).append(param)
    opt = torch.optim.AdamW(
        [
            {
                "params": params,
                "weight_decay": tc.weight_decay if decay else 0.0,
                "scale": tc.fresh_lr_scale if new else 1.0,
            }
            for (decay, new), params in groups.items()
        ],
        lr=tc.lr,
    )
    t0 = time.perf_counter()
    flow_ema = aux_ema = point_ema = float("nan")
    step = 0
    order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=gen)]
    cursor = 0
    model.train()
    while True:
        elapsed = time.perf_counter() - t0
        progress = max(step / tc.steps, elapsed / tc.time_budget_s if tc.time_budget_s else 0.0)
        if progress >= 1.0:
            break
        lr = tc.lr * min(1.0, (step + 1) / tc.warmup_steps) * 0.5 * (1.0 + np.cos(np.pi * progress))
        for group in opt.param_groups:
            group["lr"] = lr * group["scale"]
        if cursor + tc.batch_size > len(order):
            order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=gen)]
            cursor = 0
        sel = order[cursor : cursor + tc.batch_size]
        cursor += tc.batch_size
        loss, flow, aux, point = _step_loss(model, data, sel, tc, gen)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        flow_ema = flow if np.isnan(flow_ema) else 0.98 * flow_ema + 0.02 * flow
        aux_ema = aux if np.isnan(aux_ema) else 0.98 * aux_ema + 0.02 * aux
        point_ema = point if np.isnan(point_ema) else 0.98 * point_ema + 0.02 * point
        step += 1
        if step % 100 == 0:
            log.info(
                "step %d (%.0f%%): flow %.4f goal %.4f pointer %.3f lr %.2e, %.0f s",
                step,
                100 * progress,
                flow_ema,
                aux_ema,
                point_ema,
                lr,
                time.perf_counter() - t0,
            )
    model.eval()
    metrics: dict[str, Any] = {
        "steps": step,
        "fit_s": round(time.perf_counter() - t0, 1),
        "samples": len(samples),
        "episodes": samples.episodes,
        "train_samples": int(len(train_idx)),
        "val_samples": int(len(val_idx)),
        "flow_loss_ema": round(flow_ema, 5),
        "aux_loss_ema": round(aux_ema, 5),
        "pointer_loss_ema": round(point_ema, 4),
        "params": int(sum(p.numel() for p in model.parameters())),
        "config": {**asdict(tc)},
        "init": str(init) if init is not None else None,
    }
    probe = val_idx[:: max(1, len(val_idx) // 512)] if len(val_idx) else train_idx[:256]
    for k in (1, 10):
        metrics.update({f"val_{key}": round(v, 2) for key, v in evaluate_chunks(model, data, probe, norm, k).items()})
    log.info("trained: %s", metrics)
    return VlaTrained(model, norm, metrics, val_idx)
