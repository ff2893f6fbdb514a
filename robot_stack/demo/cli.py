"""``robot-stack demo``: the full loop live on the simulated cell; per-stage latency and the success rate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from robot_stack.stack.cli import add_robot_argument, add_stack_config_arguments, stack_overrides
from robot_stack.types import ActionHead
from robot_stack.viewer.cli import add_view_arguments, open_view

__all__ = ["add_demo_parser"]


def default_policy(args: argparse.Namespace) -> str:
    """``--policy``, or when not given: ``vla`` (the vision-language-action model, the demo's default since it met
    the issue-14 success floor), unless a flag that configures the reach policies' cell asks for them
    (``--manifest``, ``--action-head``, ``--robot``, ``--endpoint``: a model or arm of the reach preset, a policy
    served elsewhere): then ``reach``."""
    if args.policy is not None:
        return str(args.policy)
    if args.manifest or args.action_head or args.robot or getattr(args, "endpoint", None):
        return "reach"
    return "vla"


def _cmd_demo(args: argparse.Namespace) -> int:
    from robot_stack.demo.loop import demo_config, format_report, run_demo

    preset = args.config
    if preset is None:
        preset = "vla" if default_policy(args) == "vla" else "demo"
    config = demo_config(
        preset,
        stack_overrides(args),
        manifest=Path(args.manifest) if args.manifest else None,
        provider=args.provider,
        rate_hz=args.rate_hz,
        max_duration_s=args.max_duration,
        action_head=args.action_head,
        blend=args.blend,
        robot=args.robot,
        task=args.task,
    )
    view = open_view(args, "robot-stack-demo")
    try:
        report = run_demo(
            config, episodes=args.episodes, seed=args.seed, gif_path=Path(args.gif) if args.gif else None, view=view
        )
    finally:
        if view is not None:
            view.close()
    print(format_report(report))
    if args.json:
        summary = {"success_rate": report.success_rate, "episodes": report.episodes, "stages": report.stages}
        print(json.dumps({**summary, "executor": report.executor}))
    if report.success_rate < args.min_success:
        print(f"FAILED: success rate {report.success_rate:.0%} is below --min-success {args.min_success:.0%}")
        return 1
    return 0


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``robot-stack demo``."""
    demo = subparsers.add_parser(
        "demo",
        help="run the full loop live on the simulated cell",
        epilog="examples:\n"
        "  robot-stack demo --episodes 3           # the VLA on the tabletop suite\n"
        '  robot-stack demo --task "push the green cube to the left"\n'
        "  robot-stack demo --policy reach         # the small reach-touch policies\n"
        "  robot-stack demo --display             # live in the rerun viewer\n"
        "  robot-stack demo --action-head latent_vq --save demo.rrd --set control.rate_hz=1000",
    )
    demo.add_argument("--episodes", type=int, default=3, help="episodes to run (default 3)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the first episode's cube position")
    add_stack_config_arguments(demo, default=None)
    add_robot_argument(demo)
    demo.add_argument(
        "--policy",
        choices=["reach", "vla"],
        default=None,
        help="vla: the vision-language-action model on the tabletop suite (preset vla; the default); reach: the "
        "small reach-touch policies (preset demo; the default with --manifest, --action-head, --robot or --endpoint)",
    )
    demo.add_argument(
        "--task",
        help='the instruction sent with every observation, e.g. "touch the blue cylinder" (--policy vla: one of the '
        "tabletop suite's instructions; default: the preset's)",
    )
    demo.add_argument("--manifest", help="policy manifest (default: the preset's, the shipped reach-touch model)")
    demo.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], help="ONNX Runtime EP (default: cpu)")
    demo.add_argument("--rate-hz", type=float, help="executor rate, Hz (default: the arm's, Panda 500)")
    demo.add_argument("--max-duration", type=float, help="seconds per episode before it fails (default 10)")
    demo.add_argument("--min-success", type=float, default=0.5, help="exit 1 below this success rate")
    demo.add_argument("--gif", help="save the first episode as an animated GIF at this path")
    demo.add_argument(
        "--action-head",
        choices=[h.value for h in ActionHead],
        help="action language the served policy speaks, decoded on the robot side (default: continuous)",
    )
    demo.add_argument(
        "--blend", choices=["splice", "ensemble", "none"], help="chunk-to-chunk blending (default: splice)"
    )
    demo.add_argument("--json", action="store_true", help="also print the report as JSON")
    add_view_arguments(demo)
    demo.set_defaults(func=_cmd_demo)
    return demo
