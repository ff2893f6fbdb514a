"""``robot-stack train``, ``robot-stack evaluate`` and ``robot-stack train-demo``.

robot-stack record --teleop expert --episodes 40 --cameras front --out data/reach
robot-stack train --dataset data/reach --head continuous --out models/mine
robot-stack train --dataset data/reach --head latent_vq --out models/mine
robot-stack evaluate --manifest models/mine/reach-visuomotor-continuous.yaml --episodes 50 --expert
robot-stack train --dataset data/panda --dataset data/ur5 --dataset data/so101 --head latent_vq --out models/xemb
robot-stack evaluate --manifest models/xemb/reach-visuomotor-vq.yaml --robot so101 --episodes 50
robot-stack train-vla --budget-min 30
robot-stack evaluate --suite tabletop --manifest robot_stack/policy/models/vla/vla-tabletop-v1.yaml --scenes B

torch is imported only when ``train`` runs (``pip install -e .[train]``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from robot_stack.console import print_summary, print_table
from robot_stack.stack.cli import add_robot_argument

__all__ = ["add_train_parser"]


def _cmd_train(args: argparse.Namespace) -> int:
    from robot_stack.robots.registry import ROBOT_MODELS
    from robot_stack.training.samples import samples_from_datasets
    from robot_stack.training.trainer import TrainConfig, train

    samples = samples_from_datasets(
        args.dataset, args.camera, args.horizon, max_episodes=args.max_episodes, state_layout=args.state
    )
    robot_types: tuple[str, ...] = ()
    if args.robot_types:
        robot_types = tuple(r for r in args.robot_types.split(",") if r)
    elif samples.state_layout == "ee":
        robot_types = ROBOT_MODELS  # every described arm: one the policy never saw is known to its decoder
    config = TrainConfig(
        robot_types=robot_types,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        levels=args.levels,
        codebook_size=args.codebook_size,
        control_rate_hz=1.0 / samples.dt_s,
        threads=args.threads,
        seed=args.seed,
    )
    result = train(samples, args.head, Path(args.out), args.model_id, config)
    report: dict[str, Any] = {
        "manifest": str(result.manifest_path),
        "tokenizer": str(result.tokenizer_path) if result.tokenizer_path else None,
        **result.metrics,
    }
    if args.eval_episodes > 0:
        from robot_stack.training.evaluate import evaluate_served

        for robot in samples.robots:
            report[f"eval_{robot}"] = evaluate_served(result.manifest_path, args.eval_episodes, robot=robot).summary()
    print(json.dumps(report))
    print_summary(
        f"robot-stack train --head {args.head}", {k: v for k, v in report.items() if k != "config"}, to_stderr=True
    )
    return 0


def _scene_list(value: str) -> list[str]:
    """``A`` / ``B`` (the tabletop suite's scene sets) or comma-separated scene names."""
    from robot_stack.sim.robot_cells import SCENE_SET_A, SCENE_SET_B

    sets = {"A": list(SCENE_SET_A), "B": list(SCENE_SET_B)}
    return sets.get(value, [s for s in value.split(",") if s])


def _cmd_evaluate_suite(args: argparse.Namespace) -> int:
    from robot_stack.training.suite_evaluate import evaluate_suite

    if not args.manifest:
        print("evaluate --suite tabletop needs --manifest (the language-conditioned policy to serve)")
        return 2
    report = evaluate_suite(
        args.manifest,
        _scene_list(args.scenes),
        instructions=args.task or None,
        episodes=args.episodes,
        seed=args.seed,
        mismatched=args.mismatched,
        threads=args.threads,
        engine=args.engine,
    ).summary()
    text = json.dumps(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(text)
    worst = min(v["success_rate"] for v in report["per_instruction"].values())
    if args.min_success is not None and worst < args.min_success:
        print(f"FAILED: an instruction's success rate {worst:.0%} is below --min-success")
        return 1
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from robot_stack.training.evaluate import evaluate_expert, evaluate_served

    if args.suite == "tabletop":
        return _cmd_evaluate_suite(args)
    if args.task:
        print("--task is for the tabletop suite (--suite tabletop); the reach task has one instruction")
        return 2
    report: dict[str, Any] = {}
    robot = args.robot or "panda"
    if args.manifest:
        report["policy"] = evaluate_served(
            args.manifest, args.episodes, args.seed, tokenizer=args.tokenizer, threads=args.threads, robot=robot
        ).summary()
    if args.expert:
        report["expert"] = evaluate_expert(args.episodes, args.seed, robot=robot).summary()
    report["robot"] = robot
    print(json.dumps(report))
    _eval_table(report)
    if args.min_success is not None and "policy" in report and report["policy"]["success_rate"] < args.min_success:
        print(f"FAILED: success rate {report['policy']['success_rate']:.0%} is below --min-success")
        return 1
    return 0


def _cmd_train_demo(args: argparse.Namespace) -> int:
    from robot_stack.training.train_demo import MODELS_DIR, train_demo

    report = train_demo(
        out_dir=Path(args.out) if args.out else MODELS_DIR,
        episodes=args.episodes,
        epochs=args.epochs,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
    )
    print(json.dumps(report))
    print_summary("robot-stack train-demo", report, to_stderr=True)
    return 0


def _eval_table(report: dict[str, Any]) -> None:
    """One row per evaluated policy (and the expert), on stderr (stdout carries the JSON)."""
    rows = [
        (
            who,
            s.get("label", who),
            f"{s['successes']}/{s['episodes']}",
            f"{s['success_rate']:.0%}",
            s.get("median_time_to_success_s"),
            s.get("median_final_distance_mm"),
            s.get("wall_s"),
        )
        for who, s in report.items()
        if isinstance(s, dict)  # the report's plain entries (``robot``) are no rows
    ]
    columns = ["", "label", "successes", "rate", "median time to success s", "median final distance mm", "wall s"]
    print_table("robot-stack evaluate", columns, rows, to_stderr=True)


def _cmd_train_vla(args: argparse.Namespace) -> int:
    from robot_stack.training.train_vla import DEFAULT_VLA_ID, VLA_MODELS_DIR, train_vla
    from robot_stack.training.vla_model import VlaConfig
    from robot_stack.training.vla_train import VlaTrainConfig

    model = VlaConfig(layers=args.layers, d_model=args.d_model, heads=args.heads, mlp=2 * args.d_model)
    fit = VlaTrainConfig(
        steps=args.steps,
        time_budget_s=args.budget_min * 60.0 if args.budget_min else None,
        batch_size=args.batch_size,
        lr=args.lr,
        threads=args.threads,
        seed=args.seed,
        expert_only=args.expert_only,
        fresh_expert=args.fresh_expert,
    )
    report = train_vla(
        Path(args.out) if args.out else VLA_MODELS_DIR,
        model_id=args.model_id or (DEFAULT_VLA_ID if args.frame == "base" else f"{DEFAULT_VLA_ID}-camframe"),
        scenes=_scene_list(args.scenes),
        episodes=args.episodes,
        data=args.data,
        frame=args.frame,
        model_config=model,
        train_config=fit,
        steps=args.denoise_steps,
        seed=args.seed,
        init=args.init,
        dagger_from=args.dagger_from,
        dagger_episodes=args.dagger_episodes,
        dagger_data=args.dagger_data,
        dagger_beta=args.dagger_beta,
    )
    print(json.dumps(report))
    return 0


def add_train_parser(sub: Any) -> None:
    """Add ``train``, ``evaluate``, ``train-demo`` and ``train-vla`` to the ``robot-stack`` subcommands."""
    vla = sub.add_parser(
        "train-vla",
        help="collect tabletop demonstrations, train, export and check the vision-language-action model",
        epilog="example:\n  robot-stack train-vla --budget-min 30",
    )
    vla.add_argument("--out", help="output folder (default: the package's models/vla folder)")
    vla.add_argument("--model-id", default=None, help="default vla-tabletop-v1 (-camframe for --frame camera)")
    vla.add_argument("--scenes", default="A", help="A (scene set A), B, or comma-separated scene names")
    vla.add_argument("--episodes", type=int, default=320, help="expert episodes over scenes and instructions")
    vla.add_argument("--data", default=None, help="demonstrations .npz: loaded if it exists, else collected into it")
    vla.add_argument("--frame", choices=["base", "camera"], default="base", help="camera = the camera-frame ablation")
    vla.add_argument("--steps", type=int, default=4000, help="optimiser steps (at most)")
    vla.add_argument("--budget-min", type=float, default=None, help="wall-clock budget of the fit, minutes")
    vla.add_argument("--batch-size", type=int, default=48, help="samples per optimiser step")
    vla.add_argument(
        "--lr", type=float, default=1.5e-3, help="peak AdamW learning rate (lower it for a warm-started --init run)"
    )
    vla.add_argument("--layers", type=int, default=3, help="transformer layers of the trunk and the action expert")
    vla.add_argument("--d-model", type=int, default=64, help="token width")
    vla.add_argument("--heads", type=int, default=4, help="attention heads")
    vla.add_argument(
        "--denoise-steps", type=int, default=10, help="integration steps K per chunk, written into the manifest"
    )
    vla.add_argument("--threads", type=int, default=1, help="torch threads")
    vla.add_argument("--seed", type=int, default=0, help="seed of data order, initialisation and noise")
    vla.add_argument(
        "--init", default=None, help="warm start: the <id>.state.pt of a previous run (same architecture and frame)"
    )
    vla.add_argument(
        "--expert-only",
        action="store_true",
        help="with --init: train the action expert alone on the warm-started prefix (about twice the steps/min)",
    )
    vla.add_argument(
        "--fresh-expert",
        action="store_true",
        help="with --init: re-initialise the action expert (keep the trunk and the goal pointer)",
    )
    vla.add_argument(
        "--dagger-from", default=None, help="DAgger: a manifest whose served model drives while the expert labels"
    )
    vla.add_argument("--dagger-episodes", type=int, default=320, help="DAgger episodes over scenes and instructions")
    vla.add_argument("--dagger-data", default=None, help="DAgger samples .npz: loaded if it exists, else saved there")
    vla.add_argument(
        "--dagger-beta", type=float, default=0.3, help="probability per step that the expert drives instead"
    )
    vla.set_defaults(func=_cmd_train_vla)

    demo = sub.add_parser(
        "train-demo",
        help="collect expert data in sim, train and export the demo policy",
        epilog="example:\n  robot-stack train-demo --episodes 40 --epochs 200 --out models/demo",
    )
    demo.add_argument("--episodes", type=int, default=40)
    demo.add_argument("--epochs", type=int, default=200)
    demo.add_argument("--eval-episodes", type=int, default=10)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", help="output folder (default: the package's models/ folder)")
    demo.set_defaults(func=_cmd_train_demo)

    train = sub.add_parser(
        "train",
        help="train a visuomotor policy (continuous or VQ-token head) on a dataset",
        epilog="example:\n"
        "  robot-stack train --dataset data/reach --head continuous --out models/mine --eval-episodes 20",
    )
    train.add_argument(
        "--dataset",
        required=True,
        action="append",
        help="dataset folder written by robot-stack record; repeat it for several arms (one dataset each)",
    )
    train.add_argument(
        "--state",
        choices=["full", "ee"],
        help="state the policy sees: full (one arm's q, TCP, gripper) or ee (TCP xyz + gripper, any arm); default "
        "ee for datasets of several arms, else full",
    )
    train.add_argument(
        "--robot-types",
        help="comma-separated arms the latent_vq decoder is conditioned on (default: every described arm for an ee "
        "policy, else the canonical robot)",
    )
    train.add_argument(
        "--head",
        required=True,
        choices=["continuous", "latent_vq", "vq"],
        help="action head (vq is the old name of latent_vq)",
    )
    train.add_argument("--out", required=True, help="output folder for the ONNX model(s) and manifest(s)")
    train.add_argument("--model-id", default=None, help="default reach-visuomotor-<head>")
    train.add_argument("--camera", default="front", help="camera the policy sees (default front)")
    train.add_argument("--horizon", type=int, default=8, help="chunk length in frames (default 8)")
    train.add_argument("--epochs", type=int, default=12)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=3e-3)
    train.add_argument("--levels", type=int, default=2, help="VQ residual levels (vq head)")
    train.add_argument("--codebook-size", type=int, default=64, help="VQ codes per level (vq head)")
    train.add_argument("--max-episodes", type=int, default=None, help="use at most this many episodes")
    train.add_argument("--threads", type=int, default=2, help="torch threads")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--eval-episodes", type=int, default=0, help="then evaluate closed-loop on this many")
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser(
        "evaluate",
        help="serve a trained policy and measure its success in the lockstep sim",
        epilog="example:\n  robot-stack evaluate --manifest models/mine/reach-visuomotor-continuous.yaml --episodes 50",
    )
    ev.add_argument("--manifest", help="policy manifest YAML")
    ev.add_argument("--tokenizer", help="VQ tokenizer YAML of a latent_vq policy (default <model_id>-tokenizer.yaml)")
    ev.add_argument("--episodes", type=int, default=50)
    ev.add_argument("--seed", type=int, default=1000, help="seed of the first episode (default 1000)")
    ev.add_argument("--expert", action="store_true", help="also run the scripted expert on the same seeds")
    ev.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads of the server")
    ev.add_argument("--min-success", type=float, default=None, help="exit 1 below this success rate")
    add_robot_argument(ev, "; the latent_vq decoder decodes for it")
    ev.add_argument("--suite", choices=["reach", "tabletop"], default="reach", help="task suite (default reach)")
    ev.add_argument(
        "--task", action="append", default=[], help="tabletop: an instruction to evaluate (repeatable; default: all)"
    )
    ev.add_argument("--scenes", default="A", help="tabletop: scene set A, B or comma-separated scene names")
    ev.add_argument("--mismatched", action="store_true", help="tabletop: send another instruction (language ablation)")
    ev.add_argument("--engine", choices=["ort", "tensorrt", "torch"], default="ort", help="serving engine")
    ev.add_argument("--out", default=None, help="tabletop: also write the report (JSON) here")
    ev.set_defaults(func=_cmd_evaluate)
