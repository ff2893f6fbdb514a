"""``robot-stack`` command line: demo | serve | bench | train-demo.

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robot-stack", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument("name", help="xyz | transport | executor | ...")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    bench.set_defaults(func=_cmd_bench)
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
