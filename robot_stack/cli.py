"""``robot-stack`` command line: run, serve, record, train, calibrate, launch, test under faults, benchmark.

This module only assembles the subcommands: each package defines its own in its ``cli.py`` (heavy imports happen
inside the handlers, so ``robot-stack --help`` stays fast) and this entry point, the top of the layer order, wires
them together (docs/architecture.md).

Exit codes, the same for every command: 0 success; 1 failure (the command ran and something was wrong: a bad
configuration or data file, a failed check, an OS error such as an unwritable path, a policy below its success
floor); 2 usage (the command line itself is wrong: unknown option, missing argument); 130 interrupted (Ctrl-C).
Errors are one line on stderr, naming what was wrong and what to do; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from robot_stack.errors import RobotStackError

log = logging.getLogger("robot_stack.cli")


def _sim_calibration_tools() -> Any:
    """The simulator's calibration procedures for ``calibrate ... --sim`` (imported only when one runs)."""
    from robot_stack.sim import calibration

    return calibration


def build_parser() -> argparse.ArgumentParser:
    from robot_stack.bench.cli import add_bench_parser
    from robot_stack.calibration.cli import add_calibrate_parser
    from robot_stack.collection.cli import add_dataset_parser
    from robot_stack.demo.cli import add_demo_parser
    from robot_stack.fleet.cli import add_fleet_arguments, run_fleet
    from robot_stack.graph.cli import add_up_parser
    from robot_stack.hil.cli import add_hil_parser
    from robot_stack.policy.cli import add_compile_parser, add_serve_parser
    from robot_stack.training.cli import add_train_parser
    from robot_stack.transport.cli import add_keys_parser

    parser = argparse.ArgumentParser(prog="robot-stack", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    add_demo_parser(sub)
    add_serve_parser(sub, (add_fleet_arguments, run_fleet))
    add_train_parser(sub)
    add_keys_parser(sub)
    add_compile_parser(sub)
    add_hil_parser(sub)
    add_calibrate_parser(sub, _sim_calibration_tools)
    add_dataset_parser(sub)
    add_up_parser(sub)
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
        log.error("%s: %s", type(exc).__name__, exc, exc_info=args.verbose)
        return 1
    except OSError as exc:  # an unwritable or missing path, a full disk: the user's environment, not a crash
        where = f": {exc.filename}" if exc.filename else ""
        log.error("%s%s (%s)", exc.strerror or exc, where, type(exc).__name__, exc_info=args.verbose)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
