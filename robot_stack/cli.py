"""``robot-stack`` command line: run, serve, record, train, calibrate, launch, test under faults, benchmark, check.

This module only assembles the subcommands: each package defines its own in its ``cli.py`` (heavy imports happen
inside the handlers, so ``robot-stack --help`` stays fast) and this entry point, the top of the layer order, wires
them together (docs/architecture.md).

Exit codes, the same for every command: 0 success; 1 failure (the command ran and something was wrong: a bad
configuration or data file, a failed check, an OS error such as an unwritable path, a policy below its success
floor); 2 usage (the command line itself is wrong: unknown option, missing argument); 130 interrupted (Ctrl-C).
Errors are one line on stderr, naming what was wrong and what to do; ``-v`` adds the traceback. ``-v`` / ``-q``
(more / less logging) may stand anywhere on the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from robot_stack import __version__
from robot_stack.errors import RobotStackError

log = logging.getLogger("robot_stack.cli")

#: Tokens that set the log level wherever they stand (before a ``--``): ``-v`` debug, ``-q`` warnings only.
VERBOSE_FLAGS = {"-v": 1, "--verbose": 1, "-vv": 2, "-q": -1, "--quiet": -1}

EXAMPLES = """\
examples:
  robot-stack doctor                                   # is this machine ready? (a table of checks and fixes)
  robot-stack demo --episodes 3 --display              # the live loop on the simulated cell, in the viewer
  robot-stack record --teleop expert --episodes 20 --out data/reach
  robot-stack serve --manifest model.yaml --openpi-port 8000
  robot-stack ping tcp://gpu-box:5555 --curve-server-key keys/server.key
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; every option's default in its help line (unless the help already says
    it, or the default is empty: None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.help is argparse.SUPPRESS or "default" in text.lower() or "%(default)" in text:
            return action.help
        default = action.default
        if default is None or default is False or default == [] or default is argparse.SUPPRESS:
            return action.help
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return action.help
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def _sim_calibration_tools() -> Any:
    """The simulator's calibration procedures for ``calibrate ... --sim`` (imported only when one runs)."""
    from robot_stack.sim import calibration

    return calibration


def iter_parsers(parser: argparse.ArgumentParser, prefix: str = "robot-stack") -> Iterator[tuple[str, Any]]:
    """Every (sub)command parser under ``parser`` with its full command name (``robot-stack calibrate check``)."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from iter_parsers(sub, f"{prefix} {name}")


def build_parser() -> argparse.ArgumentParser:
    from robot_stack.bench.cli import add_bench_parser
    from robot_stack.calibration.cli import add_calibrate_parser
    from robot_stack.collection.cli import add_dataset_parser
    from robot_stack.demo.cli import add_demo_parser
    from robot_stack.doctor.cli import add_doctor_parser, add_ping_parser
    from robot_stack.fleet.cli import add_fleet_arguments, run_fleet
    from robot_stack.graph.cli import add_up_parser
    from robot_stack.hil.cli import add_hil_parser
    from robot_stack.hil.fleet_cli import add_fleet_parser
    from robot_stack.policy.cli import add_compile_parser, add_serve_parser
    from robot_stack.training.cli import add_train_parser
    from robot_stack.transport.cli import add_keys_parser

    parser = argparse.ArgumentParser(
        prog="robot-stack", description=__doc__, epilog=EXAMPLES, formatter_class=HelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (anywhere on the line)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only (anywhere on the line)")
    parser.add_argument("--version", action="version", version=f"robot-stack {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_doctor_parser(sub)
    add_demo_parser(sub)
    add_serve_parser(sub, (add_fleet_arguments, run_fleet))
    add_ping_parser(sub)
    add_train_parser(sub)
    add_keys_parser(sub)
    add_compile_parser(sub)
    add_hil_parser(sub)
    add_fleet_parser(sub)
    add_calibrate_parser(sub, _sim_calibration_tools)
    add_dataset_parser(sub)
    add_up_parser(sub)
    add_bench_parser(sub)
    for _name, p in iter_parsers(parser):
        p.formatter_class = HelpFormatter
    return parser


def split_verbosity(argv: Sequence[str]) -> tuple[list[str], int]:
    """Take ``-v``/``-q`` (and their long forms) out of ``argv`` wherever they stand before a ``--``; return the
    rest and the verbosity (-1 quiet, 0 normal, 1+ verbose)."""
    rest: list[str] = []
    level = 0
    quiet = False
    for i, token in enumerate(argv):
        if token == "--":
            rest.extend(argv[i:])
            break
        if token in VERBOSE_FLAGS:
            if VERBOSE_FLAGS[token] < 0:
                quiet = True
            else:
                level += VERBOSE_FLAGS[token]
            continue
        rest.append(token)
    return rest, (level if level else (-1 if quiet else 0))


def main(argv: Sequence[str] | None = None) -> int:
    from robot_stack.console import progress_board, setup_logging

    rest, verbosity = split_verbosity(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(rest)
    args.verbosity = verbosity
    args.verbose = verbosity > 0
    setup_logging(verbosity)
    try:
        with progress_board():
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
