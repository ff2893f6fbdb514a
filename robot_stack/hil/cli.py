"""``robot-stack hil <scenario.yaml>...``: run hardware-in-the-loop scenarios, print the metrics table.

Wired into the main CLI with :func:`add_hil_parser`. Exit code 0 when every check of every scenario held, 1
otherwise (a failed check or a bad scenario file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from robot_stack.console import report_progress
from robot_stack.stack.cli import add_robot_argument
from robot_stack.viewer.cli import add_view_arguments, open_view

__all__ = ["add_hil_parser"]


def _cmd_hil(args: argparse.Namespace) -> int:
    from robot_stack.errors import ConfigError
    from robot_stack.hil.report import format_table
    from robot_stack.hil.scenario import load_scenario, scenario_paths

    paths: list[Path] = []
    for arg in args.scenarios:
        p = Path(arg)
        paths.extend(scenario_paths(p) if p.is_dir() else [p])
    try:
        scenarios = [load_scenario(p) for p in paths]
        if args.robot:
            scenarios = [s.for_robot(args.robot) for s in scenarios]
    except ConfigError as exc:
        print(f"bad scenario: {exc}", file=sys.stderr)
        return 1
    if not args.soak:
        skipped = [s.name for s in scenarios if s.tier == "soak"]
        scenarios = [s for s in scenarios if s.tier != "soak"] if len(scenarios) > 1 else scenarios
        if skipped and len(paths) > 1:
            print(f"skipping soak scenarios {skipped} (add --soak to run them)", file=sys.stderr)
    reports = []
    view = open_view(args, "robot-stack-hil")
    try:
        reports = _run_all(args, scenarios, view)
    finally:
        if view is not None:
            view.close()
    print(format_table(reports))
    if args.report_dir:
        print(f"reports (JSON + PNG) in {args.report_dir}")
    return 0 if all(r.passed for r in reports) else 1


def _run_all(args: argparse.Namespace, scenarios: list, view: object) -> list:
    from robot_stack.errors import ConfigError
    from robot_stack.hil.harness import check_applicable, run_scenario, scenario_stack_config

    reports: list = []
    for scenario in scenarios:
        if len(scenarios) > 1:
            try:
                check_applicable(scenario, scenario_stack_config(scenario, args.manifest))
            except ConfigError as exc:
                print(f"{scenario.name}: NOT RUN on this stack: {exc}", file=sys.stderr)
                continue
        report_progress("hil scenarios", len(reports), len(scenarios), "scenarios", f"running {scenario.name}")
        report = run_scenario(scenario, report_dir=args.report_dir, manifest=args.manifest, view=view)
        reports.append(report)
        passed = sum(r.passed for r in reports)
        report_progress("hil scenarios", len(reports), len(scenarios), "scenarios", f"passed {passed}/{len(reports)}")
        if args.json:
            print(json.dumps(report.to_dict(), default=str))
        for check in report.failures:
            print(
                f"{scenario.name}: FAILED {check.name}: expected {check.expected}, got {check.actual}", file=sys.stderr
            )
    return reports


def add_hil_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``hil`` subcommand to the ``robot-stack`` CLI's subparsers; return its parser."""
    hil = subparsers.add_parser(
        "hil",
        help="run hardware-in-the-loop fault scenarios on the full stack",
        epilog="examples:\n"
        "  robot-stack hil scenarios/server-kill.yaml\n"
        "  robot-stack hil scenarios/ --report-dir out/hil",
    )
    hil.add_argument("scenarios", nargs="+", help="scenario YAML files or folders of them (e.g. scenarios/)")
    hil.add_argument("--report-dir", type=Path, help="write <scenario>.json and <scenario>.png here")
    hil.add_argument("--manifest", type=Path, help="policy manifest (default: the shipped reach-touch-v1)")
    hil.add_argument("--soak", action="store_true", help="also run soak-tier scenarios found in folders")
    hil.add_argument("--json", action="store_true", help="print each report as one JSON line too")
    add_view_arguments(hil)
    add_robot_argument(hil, "; the scenario's robots: entry for that arm applies")
    hil.set_defaults(func=_cmd_hil)
    return hil
