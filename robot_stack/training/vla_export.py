"""Exporting the VLA: two ONNX graphs (prefix encoder, denoising step) with a dynamic batch axis, their torch
programs, the tokenizer, the manifest — and the check that what is served computes what was trained.

Files written for ``model_id`` into ``out_dir``:

* ``<id>.prefix.onnx`` / ``.pt2``: rgb (B, 480, 640, 3) uint8, depth (B, 480, 640) int32 (the request's uint16,
  widened by the server: TensorRT has no uint16 tensors), calib (B, 17) float32, instruction (B, 16) int32 ->
  ``prefix_kv`` (B, 2 * layers, N, d), ``prefix_mask`` (B, N), ``goal`` (B, 3) (the pointer's target point,
  normalised); the XYZ is computed in this graph;
* ``<id>.denoise.onnx`` / ``.pt2``: noisy_actions (B, 8, 3), time (B, 1), state (B, 11) normalised, goal,
  prefix_kv, prefix_mask -> velocity (B, 8, 3);
* ``<id>.tokenizer.json``: the instruction vocabulary; ``<id>.yaml``: the manifest (``instruction:``, ``vla:`` with
  ``rtc: true``, so the server accepts real-time-chunking prefixes: :mod:`robot_stack.policy.rtc`);
* for base-frame models also the XYZ form ``<id>-xyz.prefix.onnx`` + ``<id>-xyz.yaml`` (the robot computes the
  XYZ and sends the float32 map; same weights, same denoising step) — the payload benchmark's comparison.

:func:`check_served` runs the exported graphs through the project's own runtime (:class:`~robot_stack.policy.vla
.VlaPolicy` on ONNX Runtime) and the torch programs, on real observations, and compares them with the torch model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from robot_stack.errors import PolicyError
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.training.graph_export import onnx_bytes, save_program
from robot_stack.training.vla_data import VlaSamples
from robot_stack.training.vla_model import DenoiseGraph, PrefixGraph, PrefixXyzGraph, VlaModel
from robot_stack.training.vla_train import VlaTrained

__all__ = ["ONNX_TOLERANCE_M", "check_served", "export_vla", "full_resolution"]

log = logging.getLogger("robot_stack.training.vla")

#: The served chunk (ONNX Runtime, float32) must match torch's to this many metres per step (stated in the README).
ONNX_TOLERANCE_M = 1e-4
_PREFIX_OUT = ("prefix_kv", "prefix_mask", "goal")
_DENOISE_IN = ("noisy_actions", "time", "state", "goal", "prefix_kv", "prefix_mask")


def _tensor(name: str, dtype: str, shape: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape, **extra}


def _examples(model: VlaModel, batch: int = 2) -> dict[str, torch.Tensor]:
    c = model.config
    calib = torch.zeros(batch, 17)
    calib[:, :5] = torch.tensor([460.0, 460.0, 319.5, 239.5, 0.001])
    calib[:, 5:14] = torch.eye(3).reshape(-1)
    n = c.prefix_tokens
    return {
        "rgb": torch.zeros(batch, c.height, c.width, 3, dtype=torch.uint8),
        "depth": torch.full((batch, c.height, c.width), 1000, dtype=torch.int32),
        "xyz": torch.zeros(batch, c.height, c.width, 3),
        "calib": calib,
        "ids": torch.ones(batch, c.max_tokens, dtype=torch.int32),
        "noisy_actions": torch.zeros(batch, c.horizon, c.action_dim),
        "time": torch.zeros(batch, 1),
        "state": torch.zeros(batch, c.state_dim),
        "goal": torch.zeros(batch, 3),
        "prefix_kv": torch.zeros(batch, 2 * c.layers, n, c.d_model),
        "prefix_mask": torch.ones(batch, n),
    }


def _onnx(module: nn.Module, args: tuple[torch.Tensor, ...], names: list[str], outputs: list[str], path: Path) -> None:
    path.write_bytes(onnx_bytes(module, args, names, outputs, {n: {0: "batch"} for n in names + outputs}))


def _program(module: nn.Module, args: tuple[torch.Tensor, ...], max_batch: int, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    save_program(module, args, tuple({0: batch} for _ in args), path)


def export_vla(
    trained: VlaTrained,
    out_dir: str | Path,
    model_id: str,
    tokenizer: Any,
    *,
    camera: str = "front",
    steps: int = 10,
    max_batch: int = 8,
    control_rate_hz: float = 10.0,
    dt_s: float = 0.1,
    description: str = "",
    rtc: bool = True,
) -> Path:
    """Write the graphs, programs, tokenizer and manifest(s) (module docstring); return the manifest path.
    ``rtc``: the manifest's ``vla.rtc`` (requests may carry the robot's executing prefix, guided in denoising)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = trained.model.eval()
    c = model.config
    ex = _examples(model)
    tok_path = out / f"{model_id}.tokenizer.json"
    tokenizer.save(str(tok_path))
    rgb, depth, calib, xyz = f"{camera}/rgb", f"{camera}/depth", f"{camera}/calib", f"{camera}/xyz"
    prefix_args = (ex["rgb"], ex["depth"], ex["calib"], ex["ids"])
    prefix_names = [rgb, depth, calib, "instruction"]
    _onnx(PrefixGraph(model), prefix_args, prefix_names, list(_PREFIX_OUT), out / f"{model_id}.prefix.onnx")
    _program(PrefixGraph(model), prefix_args, max_batch, out / f"{model_id}.prefix.pt2")
    denoise_args = tuple(ex[n] for n in _DENOISE_IN)
    _onnx(DenoiseGraph(model), denoise_args, list(_DENOISE_IN), ["velocity"], out / f"{model_id}.denoise.onnx")
    _program(DenoiseGraph(model), denoise_args, max_batch, out / f"{model_id}.denoise.pt2")
    n, kv_dims = c.prefix_tokens, [-1, 2 * c.layers, c.prefix_tokens, c.d_model]
    image = [-1, c.height, c.width]
    specs = {  # every tensor the two graphs exchange, listed in each graph's own order below
        "prefix_kv": _tensor("prefix_kv", "float32", kv_dims),
        "prefix_mask": _tensor("prefix_mask", "float32", [-1, n]),
        "goal": _tensor("goal", "float32", [-1, 3]),
        "noisy_actions": _tensor("noisy_actions", "float32", [-1, c.horizon, c.action_dim]),
        "time": _tensor("time", "float32", [-1, 1]),
        "state": _tensor("state", "float32", [-1, c.state_dim]),
    }
    prefix_outputs = [specs[name] for name in _PREFIX_OUT]
    denoise = {
        "onnx": f"{model_id}.denoise.onnx",
        "torch": {"program": f"{model_id}.denoise.pt2"},
        "inputs": [specs[name] for name in _DENOISE_IN],
        "outputs": [_tensor("velocity", "float32", [-1, c.horizon, c.action_dim])],
    }
    common = {
        "outputs": [_tensor("actions", "float32", [-1, c.horizon, c.action_dim])],
        "action_space": "ee_delta_xyz",
        "action_head": "continuous",
        "horizon": c.horizon,
        "dt_s": dt_s,
        "control_rate_hz": control_rate_hz,
        "normalization": {
            "state": {"mean": trained.norm.state_mean.tolist(), "std": trained.norm.state_std.tolist()},
            "actions": {"mean": trained.norm.action_mean.tolist(), "std": trained.norm.action_std.tolist()},
        },
        "providers": ["tensorrt", "cuda", "cpu"],
        "max_batch": max_batch,
        "instruction": {"input": "instruction", "tokenizer": tok_path.name, "max_tokens": c.max_tokens},
    }
    ids_spec = _tensor("instruction", "int32", [-1, c.max_tokens])
    state_spec = _tensor("state", "float32", [-1, c.state_dim])
    manifest = {
        "model_id": model_id,
        "onnx": f"{model_id}.prefix.onnx",
        "inputs": [
            _tensor(rgb, "uint8", [*image, 3]),
            _tensor(depth, "uint16", image),
            _tensor(calib, "float32", [-1, 17]),
            state_spec,
            ids_spec,
        ],
        **common,
        "description": description,
        "torch": {"program": f"{model_id}.prefix.pt2"},
        "vla": {
            "steps": steps,
            "prefix_inputs": [
                _tensor(rgb, "uint8", [*image, 3]),
                _tensor(depth, "int32", image),
                _tensor(calib, "float32", [-1, 17]),
                ids_spec,
            ],
            "prefix_outputs": prefix_outputs,
            "denoise": denoise,
            "rtc": rtc,
        },
    }
    path = out / f"{model_id}.yaml"
    path.write_text(yaml.safe_dump(PolicyManifest.from_dict(manifest, base_dir=out).to_dict(out), sort_keys=False))
    if c.frame == "base":
        xyz_id = f"{model_id}-xyz"
        xyz_args = (ex["rgb"], ex["xyz"], ex["ids"])
        _onnx(
            PrefixXyzGraph(model), xyz_args, [rgb, xyz, "instruction"], list(_PREFIX_OUT), out / f"{xyz_id}.prefix.onnx"
        )
        xyz_spec = _tensor(xyz, "float32", [*image, 3], allow_nonfinite=True)
        xyz_manifest = {
            **manifest,
            "model_id": xyz_id,
            "onnx": f"{xyz_id}.prefix.onnx",
            "inputs": [_tensor(rgb, "uint8", [*image, 3]), xyz_spec, state_spec, ids_spec],
            "description": f"{description} XYZ form: the robot computes the base-frame XYZ and sends it.",
            "vla": {**manifest["vla"], "prefix_inputs": [_tensor(rgb, "uint8", [*image, 3]), xyz_spec, ids_spec]},
        }
        xyz_manifest.pop("torch")
        doc = PolicyManifest.from_dict(xyz_manifest, base_dir=out).to_dict(out)
        (out / f"{xyz_id}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    log.info("exported %s to %s", model_id, out)
    return path


def full_resolution(samples: VlaSamples, i: int, height: int = 480, width: int = 640) -> dict[str, np.ndarray]:
    """Server arrays (batch of 1, depth form) whose in-graph grid slice gives back sample ``i`` exactly."""
    s = samples.stride

    def up(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.repeat(np.repeat(a, s, 0), s, 1)[:height, :width])[None]

    return {
        "front/rgb": up(samples.rgb[i]),
        "front/depth": up(samples.depth[i]),
        "front/calib": samples.calib[i][None].astype(np.float32),
        "state": samples.state[i][None].astype(np.float32),
    }


def check_served(
    manifest_path: str | Path, trained: VlaTrained, samples: VlaSamples, instruction_ids: np.ndarray, probes: int = 6
) -> dict[str, float]:
    """Serve the exported files with the project's runtime (ONNX Runtime) and the torch programs and compare with
    the torch model on ``probes`` real observations (and a batch of all of them): the sampled chunk (same noise,
    K = manifest steps) must agree within :data:`ONNX_TOLERANCE_M`. Returns the worst errors (metres).

    Raises:
        PolicyError: a graph or program disagrees with the model.
    """
    from robot_stack.policy.backends import load_backend

    manifest = PolicyManifest.load(manifest_path)
    model = trained.model.eval()
    picks = np.linspace(0, len(samples) - 1, probes).astype(int)
    feeds = [
        {**full_resolution(samples, int(i)), "instruction": instruction_ids[samples.instruction[i]][None]}
        for i in picks
    ]
    batch = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
    worst: dict[str, float] = {}
    for engine in ("ort", "torch"):
        choice = load_backend(manifest, engine, threads=1, strict=True)
        policy = choice.policy
        try:
            for feed in [*feeds, batch]:
                rows = feed["state"].shape[0]
                noise = np.random.default_rng(rows).standard_normal((rows, *manifest.outputs[0].shape[1:]))
                served = policy.sample(feed, noise=noise.astype(np.float32)) * trained.norm.action_std
                with torch.no_grad():
                    kv, mask, goal = _torch_prefix(model, feed)
                    state = torch.from_numpy((feed["state"] - trained.norm.state_mean) / trained.norm.state_std)
                    x0 = torch.from_numpy(noise.astype(np.float32))
                    ref = model.sample(state, goal, kv, mask, policy.steps, x0)
                err = float(np.abs(served - ref.numpy() * trained.norm.action_std).max())
                worst[engine] = max(worst.get(engine, 0.0), err)
        finally:
            policy.close()
        if worst[engine] > ONNX_TOLERANCE_M:
            raise PolicyError(
                f"served {manifest.model_id} ({engine}) differs from the torch model by {worst[engine] * 1e3:.4f} mm "
                f"per step (tolerance {ONNX_TOLERANCE_M * 1e3} mm); not shipping it"
            )
    return {f"served_max_abs_err_m_{k}": v for k, v in worst.items()}


def _torch_prefix(model: VlaModel, feed: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return PrefixGraph(model)(
        torch.from_numpy(feed["front/rgb"]),
        torch.from_numpy(feed["front/depth"].astype(np.int32)),
        torch.from_numpy(feed["front/calib"]),
        torch.from_numpy(feed["instruction"]),
    )
