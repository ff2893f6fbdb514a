"""``robot-stack`` command line: run, serve, record, train, calibrate, launch, test under faults, benchmark.

Each subcommand is a thin wrapper over the library; heavy imports happen inside the handlers so that
``robot-stack --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from robot_stack.errors import RobotStackError

log = logging.getLogger("robot_stack.cli")


def _cmd_bench(args: argparse.Namespace) -> int:
    from robot_stack.bench import load_builtin, registry

    failures = load_builtin()
    benches = registry()
    if args.name not in benches:
        hint = f" (failed to load: {failures[args.name]})" if args.name in failures else ""
        print(f"unknown benchmark {args.name!r}{hint}; available: {', '.join(sorted(benches))}", file=sys.stderr)
        return 2
    result = {"bench": args.name, **benches[args.name](args.quick)}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>32}: {value}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robot_stack.demo import DEFAULT_MANIFEST, format_report, run_demo

    report = run_demo(
        episodes=args.episodes,
        seed=args.seed,
        manifest=Path(args.manifest) if args.manifest else DEFAULT_MANIFEST,
        provider=args.provider,
        rate_hz=args.rate_hz,
        max_duration_s=args.max_duration,
        gif_path=Path(args.gif) if args.gif else None,
        action_head=args.action_head,
        blend=args.blend,
    )
    print(format_report(report))
    if args.json:
        print(json.dumps({"success_rate": report.success_rate, "episodes": report.episodes, "stages": report.stages}))
    if report.success_rate < args.min_success:
        print(f"FAILED: success rate {report.success_rate:.0%} is below --min-success {args.min_success:.0%}")
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from robot_stack.policy.service import serve

    serve(
        args.manifest,
        bind=args.bind,
        provider=args.provider,
        strict=args.strict,
        threads=args.threads,
        curve_secret=args.curve_secret,
        allow_dir=args.allow_dir,
        engine=args.engine,
        precision=args.precision,
    )
    return 0


def _cmd_train_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robot_stack.policy.train_demo import MODELS_DIR, train_demo

    report = train_demo(
        out_dir=Path(args.out) if args.out else MODELS_DIR,
        episodes=args.episodes,
        epochs=args.epochs,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
    )
    print(json.dumps(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robot-stack", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument("name", help="xyz | transport | executor | ...")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    bench.set_defaults(func=_cmd_bench)

    demo = sub.add_parser("demo", help="run the full loop live on the simulated cell")
    demo.add_argument("--episodes", type=int, default=3, help="episodes to run (default 3)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the first episode's cube position")
    demo.add_argument("--manifest", help="policy manifest (default: the shipped reach-touch model)")
    demo.add_argument("--provider", default="cpu", choices=["cpu", "cuda", "tensorrt"], help="ONNX Runtime EP")
    demo.add_argument("--rate-hz", type=float, default=500.0, help="executor rate (default 500)")
    demo.add_argument("--max-duration", type=float, default=10.0, help="seconds per episode before it fails")
    demo.add_argument("--min-success", type=float, default=0.5, help="exit 1 below this success rate")
    demo.add_argument("--gif", help="save the first episode as an animated GIF at this path")
    demo.add_argument(
        "--action-head",
        default="continuous",
        choices=["continuous", "latent_vq", "binned", "motion_tracks"],
        help="action language the served policy speaks (decoded on the robot side)",
    )
    demo.add_argument(
        "--blend", default="splice", choices=["splice", "ensemble", "none"], help="chunk-to-chunk blending"
    )
    demo.add_argument("--json", action="store_true", help="also print the report as JSON")
    demo.set_defaults(func=_cmd_demo)

    serve = sub.add_parser("serve", help="serve a policy over ZeroMQ")
    serve.add_argument("--manifest", required=True, help="model manifest YAML (next to the .onnx)")
    serve.add_argument("--bind", default="tcp://127.0.0.1:5555", help="endpoint (localhost unless you say so)")
    serve.add_argument("--provider", default=None, choices=["cpu", "cuda", "tensorrt"], help="execution provider")
    serve.add_argument("--strict", action="store_true", help="fail instead of falling back to CPU")
    serve.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all)")
    serve.add_argument("--curve-secret", help="server .key_secret file: enables CURVE authentication")
    serve.add_argument("--allow-dir", help="folder of allowed client .key files (needs --curve-secret)")
    serve.add_argument(
        "--engine", default="ort", choices=["ort", "tensorrt", "torch"], help="ONNX Runtime, native TensorRT or torch"
    )
    serve.add_argument("--precision", default=None, help="fp32|fp16|int8 (TensorRT), fp32|fp16|bf16 (torch)")
    serve.set_defaults(func=_cmd_serve)

    train = sub.add_parser("train-demo", help="collect expert data in sim, train and export the demo policy")
    train.add_argument("--episodes", type=int, default=40)
    train.add_argument("--epochs", type=int, default=200)
    train.add_argument("--eval-episodes", type=int, default=10)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="output folder (default: the package's models/ folder)")
    train.set_defaults(func=_cmd_train_demo)

    from robot_stack.calibration.commands import add_calibrate_parser
    from robot_stack.dataset.cli import add_dataset_parser
    from robot_stack.graph.cli import add_up_parser
    from robot_stack.hil.cli import add_hil_parser
    from robot_stack.policy.tensorrt import add_compile_parser
    from robot_stack.training.cli import add_train_parser
    from robot_stack.transport.keys import add_keys_parser

    add_keys_parser(sub)
    add_compile_parser(sub)
    add_hil_parser(sub)
    add_calibrate_parser(sub)
    add_dataset_parser(sub)
    add_up_parser(sub)
    add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except RobotStackError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
