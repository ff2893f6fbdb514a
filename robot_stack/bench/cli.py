"""``robot-stack bench <name> [--json] [--quick]``: run one benchmark and print its figures."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_bench_parser"]


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


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``robot-stack bench <name> [--json] [--quick]``."""
    from robot_stack.bench import BUILTIN_MODULES

    bench = subparsers.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        epilog="examples:\n  robot-stack bench transport --json\n  robot-stack bench executor --quick",
    )
    bench.add_argument("name", help=" | ".join(BUILTIN_MODULES))
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    bench.set_defaults(func=_cmd_bench)
    return bench
