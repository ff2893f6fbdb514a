"""``robot-stack train-vla``: build the VLA from scratch — demonstrations, tokenizer, training, export, checks.

1. **Collect** expert demonstrations of every instruction of the tabletop suite on the camera placements of scene
   set A (:func:`robot_stack.training.vla_data.collect_vla`; lockstep, reproducible), or load them from ``--data``.
   With ``--dagger-from MANIFEST``, a DAgger round is added: that (served) model drives the rig, the expert labels
   the states it visits (loaded from ``--dagger-data`` when that file exists).
2. **Tokenizer**: build the instruction vocabulary (:func:`robot_stack.training.vla_tokenizer.build_tokenizer`).
3. **Train** the model (:func:`robot_stack.training.vla_train.train_vla_model`).
4. **Export** the prefix encoder and denoising step (ONNX + torch programs), the tokenizer and the manifest
   (:func:`robot_stack.training.vla_export.export_vla`) and **check** that ONNX Runtime and the torch programs, run
   by the project's own runtime, reproduce the torch model (:func:`robot_stack.training.vla_export.check_served`).

``frame="camera"`` trains the camera-frame ablation (same data, points left in the camera's optical frame).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_stack.policy.instruction import InstructionSpec, InstructionTokenizer
from robot_stack.policy.manifest import SHIPPED_MODELS_DIR
from robot_stack.sim.robot_cells import SCENE_SET_A
from robot_stack.training.vla_data import VlaSamples, collect_vla
from robot_stack.training.vla_export import check_served, export_vla
from robot_stack.training.vla_model import VlaConfig
from robot_stack.training.vla_tokenizer import build_tokenizer
from robot_stack.training.vla_train import VlaTrainConfig, train_vla_model

__all__ = ["DEFAULT_VLA_ID", "VLA_MODELS_DIR", "train_vla"]

log = logging.getLogger("robot_stack.training.vla")

#: Where the shipped VLA lives, and its id.
VLA_MODELS_DIR = SHIPPED_MODELS_DIR / "vla"
DEFAULT_VLA_ID = "vla-tabletop-v1"


def instruction_ids(tokenizer_path: Path, texts: Sequence[str], max_tokens: int) -> np.ndarray:
    """(len(texts), max_tokens) int32 ids, tokenized exactly as the server will (the saved tokenizer file)."""
    tok = InstructionTokenizer(InstructionSpec("instruction", tokenizer_path, max_tokens))
    return np.stack([tok.encode(t) for t in texts])


def train_vla(
    out_dir: str | Path = VLA_MODELS_DIR,
    *,
    model_id: str = DEFAULT_VLA_ID,
    scenes: Sequence[str] = SCENE_SET_A,
    episodes: int = 320,
    data: str | Path | None = None,
    save_data: str | Path | None = None,
    frame: str = "base",
    model_config: VlaConfig | None = None,
    train_config: VlaTrainConfig | None = None,
    steps: int = 10,
    seed: int = 0,
    init: str | Path | None = None,
    dagger_from: str | Path | None = None,
    dagger_episodes: int = 320,
    dagger_data: str | Path | None = None,
    dagger_beta: float = 0.3,
) -> dict[str, Any]:
    """Collect (or load ``data``), train (from the weights in ``init`` when given), export to ``out_dir`` and
    check; return the report (also logged). The trained weights are also saved as ``<model_id>.state.pt`` (a torch
    state dict: the ``init`` of a later run).

    ``dagger_from``: a served model's manifest; ``dagger_episodes`` more episodes are collected with it driving
    (the expert with probability ``dagger_beta`` per step) and labelled by the expert, saved to ``dagger_data``
    (or loaded from it when the file exists), and trained on together with the demonstrations."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data is not None and Path(data).is_file():
        samples = VlaSamples.load(data)
        log.info("loaded %d samples (%d episodes) from %s", len(samples), samples.episodes, data)
    else:
        samples = collect_vla(scenes, episodes, seed=seed)
        target = save_data or data
        if target is not None:
            samples.save(target)
    demo_success = samples.success
    dagger_report: dict[str, Any] = {}
    if dagger_from is not None:
        dagger = _dagger_samples(dagger_from, scenes, dagger_episodes, dagger_data, dagger_beta, seed)
        dagger_report = {
            "dagger_from": str(dagger_from),
            "dagger_episodes": dagger.episodes,
            "dagger_samples": len(dagger),
            "dagger_beta": dagger_beta,
            "dagger_mixed_success_rate": round(float(dagger.success.mean()), 4),
        }
        samples = VlaSamples.concat([samples, dagger])
    t_collect = time.perf_counter() - t0
    tokenizer = build_tokenizer()
    tok_path = out / f"{model_id}.tokenizer.json"
    tokenizer.save(str(tok_path))
    height, width = samples.image_hw
    config = replace(
        model_config or VlaConfig(),
        frame=frame,
        vocab_size=tokenizer.get_vocab_size(),
        height=height,
        width=width,
        stride=samples.stride,
        offset=samples.offset,
    )
    ids = instruction_ids(tok_path, samples.instructions, config.max_tokens)
    trained = train_vla_model(samples, config, train_config or VlaTrainConfig(seed=seed), ids, init=init)
    torch.save(trained.model.state_dict(), out / f"{model_id}.state.pt")
    description = (
        f"Vision-language-action model of the tabletop suite ({config.frame}-frame points): attention-pooled patch "
        f"tokens ({config.vision_tokens}) with 3D position embeddings from the XYZ computed in-graph from depth + "
        f"calibration, {config.max_tokens} language tokens, a {config.layers}-layer transformer trunk (d "
        f"{config.d_model}) and a flow-matching action expert on its cached keys/values ({steps} Euler steps); "
        f"trained by robot-stack train-vla on {len(samples)} samples from {samples.episodes} scripted-expert episodes "
        f"over scenes {', '.join(samples.scenes)}."
    )
    manifest = export_vla(trained, out, model_id, tokenizer, steps=steps, description=description)
    checks = check_served(manifest, trained, samples, ids)
    report = {
        "manifest": str(manifest),
        "frame": config.frame,
        "samples": len(samples),
        "episodes": samples.episodes,
        "expert_success_rate": round(float(demo_success.mean()), 4),
        **dagger_report,
        "collect_s": round(t_collect, 1),
        **trained.metrics,
        **{k: float(f"{v:.3g}") for k, v in checks.items()},
        "model_config": asdict(config),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    (out / f"{model_id}.train.json").write_text(json.dumps(report, indent=1))
    log.info("train-vla report: %s", report)
    return report


#: Seeds of DAgger episodes start here: clear of the demonstrations' (``seed + e``) and the evaluation's (1000 + j).
DAGGER_SEED = 5000


def _dagger_samples(
    manifest: str | Path,
    scenes: Sequence[str],
    episodes: int,
    path: str | Path | None,
    beta: float,
    seed: int,
) -> VlaSamples:
    """One DAgger round: load ``path`` when it exists, else collect with the served ``manifest`` driving (and save
    to ``path``)."""
    from robot_stack.training.suite_evaluate import served_policy

    if path is not None and Path(path).is_file():
        samples = VlaSamples.load(path)
        log.info("loaded %d DAgger samples (%d episodes) from %s", len(samples), samples.episodes, path)
        return samples
    with served_policy(manifest) as learner:
        samples = collect_vla(scenes, episodes, seed=DAGGER_SEED + seed, learner=learner, beta=beta)
    if path is not None:
        samples.save(path)
    return samples
