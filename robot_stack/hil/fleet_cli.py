"""``robot-stack fleet check``: simulated robots against single servers and against the Ray fleet, compared.

Wired into the main CLI with :func:`add_fleet_parser`. Prints one row per robot (single server vs fleet) and exits
0 when every check of :mod:`robot_stack.hil.fleet_check` held, 1 otherwise (a safety counter above 0, a lost
request, outcomes that differ, a kill that did not happen or a replica not replaced).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from typing import Any

__all__ = ["add_fleet_parser", "format_rows"]

DESCRIPTION = """\
Several simulated robots (each in its own process, its arm's lockstep cell on a simulated clock, every command
audited) run the same episodes twice at once: against one `robot-stack serve` per model, then against one
`robot-stack serve --ray` ingress with --replicas replicas per model (robots pick their model by model_id), with
one replica killed mid-run when --kill-replica is given. Exits 1 unless every robot has 0 safety interventions,
0 unsafe commands, 0 commands outside its workspace box, 0 answers for another observation and 0 failed requests
in both runs, the same episode outcomes in both runs, and (with --kill-replica) the killed replica was replaced.
"""

EXAMPLES = """\
examples:
  robot-stack fleet check --episodes 10 --replicas 2 --kill-replica
  robot-stack fleet check --robots panda,ur5,so101 --episodes 3 --json
  robot-stack fleet check --robots panda:reach-touch-v1,panda:reach-touch-v1 --episodes 5
"""


def _pair(row: dict[str, Any], key: str) -> str:
    return f"{row[f'{key}_single']} / {row[f'{key}_fleet']}"


def format_rows(comparison: list[dict[str, Any]]) -> tuple[list[str], list[list[object]]]:
    """Table columns and rows (single / fleet in each cell) of a fleet check's per-robot comparison."""
    columns = [
        "robot",
        "model",
        "successes",
        "interventions",
        "unsafe",
        "outside box",
        "stale",
        "failed",
        "held steps",
        "identical chunks",
        "replicas (fleet)",
        "round trip p50 ms",
    ]
    rows: list[list[object]] = []
    for r in comparison:
        rows.append(
            [
                r["robot_id"],
                r["model_id"],
                f"{r['successes_single']}/{r['episodes']} / {r['successes_fleet']}/{r['episodes']}",
                _pair(r, "interventions"),
                _pair(r, "unsafe_commands"),
                _pair(r, "outside_box_commands"),
                _pair(r, "stale_replies"),
                _pair(r, "failed"),
                _pair(r, "held_steps"),
                f"{r['identical_steps']}/{r['compared_steps']}",
                " ".join(f"{k[:8]}:{v}" for k, v in sorted(r["replicas_fleet"].items())) or "-",
                _pair(r, "round_trip_p50_ms"),
            ]
        )
    return columns, rows


def _cmd_fleet_check(args: argparse.Namespace) -> int:
    from robot_stack.console import print_table
    from robot_stack.hil.fleet_check import parse_robots, run_fleet_check

    overrides = list(args.set or ())
    robots = parse_robots(args.robots, overrides)
    # Ray prints its processes' notices (a replica's death) on stdout: with --json, stdout carries the report only
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        report = run_fleet_check(
            robots,
            args.episodes,
            args.seed,
            replicas=args.replicas,
            kill_replica=args.kill_replica,
            kill_after=args.kill_after,
            timeout_s=args.timeout_s,
            max_duration_s=args.max_duration_s,
            success_tolerance=args.success_tolerance,
            overrides=overrides,
            log_level=logging.INFO if getattr(args, "verbose", False) else logging.ERROR,
        )
    data = report.to_dict()
    if args.json:
        print(json.dumps(data, default=str))
    columns, rows = format_rows(data["comparison"])
    title = f"robot-stack fleet check: single server / fleet ({data['settings']['replicas']} replicas per model)"
    print_table(title, columns, rows, to_stderr=args.json)
    out = sys.stderr if args.json else sys.stdout
    kill = report.fleet.kill
    if kill is not None:
        replaced = "not replaced" if kill.replaced_after_s is None else f"replaced after {kill.replaced_after_s} s"
        print(
            f"killed replica {kill.replica} of {kill.model_id} (pid {kill.pid}; frozen {kill.frozen_s} s, then SIGKILL)"
            f" after {kill.after_requests} answers, {kill.t_s} s into the fleet run, holding {kill.held_calls} call(s)"
            f" for {kill.held_s} s; the dispatcher sent {kill.retried} call(s) again ({kill.failed_over} request(s) "
            f"answered by another replica); {replaced}",
            file=out,
        )
    print(
        f"wall: single run {report.single.wall_s:.0f} s (servers' start-up included), fleet run "
        f"{report.fleet.wall_s:.0f} s (from its replicas ready; they started during the single run)",
        file=out,
    )
    for check in report.failures:
        print(f"FAILED {check.name}: expected {check.expected}, got {check.actual}", file=sys.stderr)
    print("PASSED: same safety results on the fleet as on single servers" if report.passed else "FAILED", file=out)
    return 0 if report.passed else 1


def add_fleet_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``fleet check`` to the ``robot-stack`` CLI's subparsers; return the ``fleet`` parser."""
    from robot_stack.hil.fleet_check import DEFAULT_ROBOTS

    fleet = subparsers.add_parser(
        "fleet",
        help="check a fleet of simulated robots against the Ray-served policy (docs/fleet.md)",
        epilog=EXAMPLES,
    )
    sub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")
    check = sub.add_parser(
        "check",
        help="robots against single servers, then the same against `serve --ray`: same safety results?",
        description=DESCRIPTION,
        epilog=EXAMPLES,
    )
    check.add_argument(
        "--robots",
        default=DEFAULT_ROBOTS,
        help="ARM[:MODEL],... one simulated robot (own process) each; MODEL: a shipped model name or a manifest "
        "(an arm without one runs its demo policy, the cross-embodiment reach-xemb-vq)",
    )
    check.add_argument("--episodes", type=int, default=3, help="episodes per robot (the same seeds in both runs)")
    check.add_argument("--seed", type=int, default=1000, help="first episode seed")
    check.add_argument("--replicas", type=int, default=2, help="Ray Serve replicas per model in the fleet run")
    check.add_argument(
        "--kill-replica",
        action="store_true",
        help="kill one replica (SIGKILL) of the model most robots use mid-run; it must be replaced",
    )
    check.add_argument(
        "--kill-after", type=int, default=None, help="kill after this many answers (default ~ a third of the run)"
    )
    check.add_argument("--timeout-s", type=float, default=10.0, help="each request's deadline, s")
    check.add_argument("--max-duration-s", type=float, default=8.0, help="simulated seconds per episode at most")
    check.add_argument(
        "--success-tolerance", type=int, default=0, help="seeds per robot whose outcome may differ between the runs"
    )
    check.add_argument(
        "--set",
        action="append",
        metavar="SECTION.FIELD=VALUE",
        help="override a field of every robot's demo stack, e.g. --set control.workspace_from_robot=true (repeatable)",
    )
    check.add_argument("--json", action="store_true", help="print the full report as JSON (the table goes to stderr)")
    check.set_defaults(func=_cmd_fleet_check)
    return fleet
