"""``robot-stack bench <name> [--json] [--quick]``: run one benchmark and print its figures."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from typing import Any

__all__ = ["add_bench_parser"]


def _cmd_bench(args: argparse.Namespace) -> int:
    from robot_stack.bench import load_builtin, registry
    from robot_stack.console import print_summary, report_progress

    failures = load_builtin()
    benches = registry()
    for name in args.names:
        if name not in benches:
            hint = f" (failed to load: {failures[name]})" if name in failures else ""
            print(f"unknown benchmark {name!r}{hint}; available: {', '.join(sorted(benches))}", file=sys.stderr)
            return 2
        if args.set and "overrides" not in inspect.signature(benches[name]).parameters:
            print(f"benchmark {name!r} takes no --set (it builds no stack)", file=sys.stderr)
            return 2
    for i, name in enumerate(args.names):
        report_progress("bench", i, len(args.names), "benchmarks", f"running {name}")
        fn = benches[name]
        figures = fn(args.quick, overrides=args.set) if args.set else fn(args.quick)  # type: ignore[call-arg]
        result = {"bench": name, **figures}
        report_progress("bench", i + 1, len(args.names), "benchmarks", f"{name} done")
        if args.json:
            print(json.dumps(result), flush=True)
        print_summary(f"robot-stack bench {name}" + (" --quick" if args.quick else ""), result, to_stderr=args.json)
    return 0


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``robot-stack bench NAME... [--json] [--quick]``."""
    from robot_stack.bench import BUILTIN_MODULES

    bench = subparsers.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        epilog="examples:\n  robot-stack bench transport --json\n  robot-stack bench executor --quick",
    )
    bench.add_argument("names", nargs="+", metavar="NAME", help="one or more of: " + " | ".join(BUILTIN_MODULES))
    bench.add_argument("--json", action="store_true", help="print one JSON object per benchmark (tables on stderr)")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    bench.add_argument(
        "--set",
        action="append",
        metavar="SECTION.FIELD=VALUE",
        help="stack-config override for benchmarks that run the stack (motion), e.g. --set control.blend=ensemble",
    )
    bench.set_defaults(func=_cmd_bench)
    return bench
