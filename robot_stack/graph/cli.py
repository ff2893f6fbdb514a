"""``robot-stack up <graph> [name:=value ...]``: run a graph file's nodes as supervised processes.

Wired into the main CLI with :func:`add_up_parser`. The same graphs run on hardware with
``ros2 launch robot_stack_ros robot_stack.launch.py name:=value`` (hardware) or ``... sim.launch.py`` (sim).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from robot_stack.console import print_table
from robot_stack.graph.monitor import read_summary
from robot_stack.graph.spec import NodeLaunch
from robot_stack.stack.cli import add_robot_argument
from robot_stack.viewer.cli import add_view_arguments

__all__ = ["add_up_parser", "robot_arguments"]


def _cmd_up(args: argparse.Namespace) -> int:
    from robot_stack.errors import ConfigError
    from robot_stack.graph.spec import load_graph, parse_overrides
    from robot_stack.graph.supervisor import Supervisor

    try:
        spec = load_graph(args.graph)
        if args.show_args:  # as ros2 launch <file> -s
            defaults = spec.defaults()
            print(f"Arguments of {spec.name} (pass arguments as '<name>:=<value>'):")
            for name, arg in spec.arguments.items():
                choices = f" Valid choices are: {list(arg.choices)}" if arg.choices else ""
                print(f"\n    {name!r}:\n        {arg.help()}{choices}\n        (default: {defaults[name]!r})")
            return 0
        overrides = parse_overrides(args.overrides)
        if args.robot:
            overrides = {**robot_arguments(spec.defaults(), args.robot), **overrides}
        nodes = spec.resolve(overrides, args.config_dir)
    except ConfigError as exc:
        print(f"bad graph: {exc}", file=sys.stderr)
        return 2
    if args.print:
        for node in nodes:
            print(f"{node.name}: {' '.join(node.argv('<inline-parameters.yaml>' if node.parameters else None))}")
        return 0
    env = {"ROS_DOMAIN_ID": str(args.domain_id)} if args.domain_id is not None else {}
    if args.localhost:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    summary_file = Path(tempfile.mkdtemp(prefix="robot-stack-up-")) / "monitor.json"
    if not args.no_monitor:
        nodes = [*nodes, _monitor_node(args, summary_file)]
    supervisor = Supervisor(nodes, log_dir=args.log_dir, echo=getattr(args, "verbosity", 0) >= 0, env=env)
    print(f"robot-stack up: {spec.name} ({len(nodes)} processes), logs in {supervisor.log_dir}", file=sys.stderr)
    code = supervisor.run(args.duration)
    print(supervisor.summary(), file=sys.stderr)
    for name, why in supervisor.given_up.items():
        print(f"{name} {why}: see {supervisor.log_dir / (name + '.log')}", file=sys.stderr)
    _print_summary(spec.name, supervisor, read_summary(summary_file))
    return code


def _monitor_node(args: argparse.Namespace, summary_file: Path) -> NodeLaunch:
    """The monitor process: counts episodes, successes and holds for the summary; shows or saves the graph."""
    params: dict[str, object] = {"summary_file": str(summary_file), "display": bool(args.display)}
    if args.save:
        params["save"] = str(Path(args.save).resolve())
    params["web_port"] = int(args.web_port)
    return NodeLaunch(name="monitor", package="robot_stack_ros", executable="monitor_node", parameters=params)


def _print_summary(graph: str, supervisor: object, monitor: dict | None) -> None:
    """What the graph did: episodes, successes, holds (from the monitor) and restarts (per process)."""
    status = supervisor.status()  # type: ignore[attr-defined]
    restarts = {name: max(0, s.starts - 1) for name, s in status.items() if name != "monitor"}
    m = monitor or {}
    rows = [
        ("episodes", m.get("episodes")),
        ("successes", m.get("successes")),
        ("timeouts", m.get("timeouts")),
        ("watchdog holds", m.get("holds")),
        ("restarts", sum(restarts.values())),
    ]
    rows += [(f"  restarts of {name}", n) for name, n in restarts.items() if n]
    if monitor is None:
        rows.append(("monitor", "no summary (the monitor did not run or was killed; see its log)"))
    print_table(f"up {graph}", ["summary", "value"], rows, to_stderr=True)


def robot_arguments(declared: dict[str, str], robot: str) -> dict[str, str]:
    """The launch arguments ``--robot`` sets (those the graph declares): ``robot``; on a simulated graph (one with a
    ``scene`` default of a simulated cell) also the arm's cell, the policy that serves every arm and its decoder.
    Arguments given explicitly as name:=value win over these."""
    from robot_stack.robots.registry import get_embodiment
    from robot_stack.stack.config import load_stack_config, with_robot

    get_embodiment(robot)
    out = {"robot": robot}
    if str(declared.get("scene", "")).startswith("sim"):
        config = with_robot(load_stack_config("demo"), robot)
        out.update(scene=config.calibration.scene, manifest=str(config.policy.manifest_path()))
        out["decoder"] = config.policy.action_head if config.policy.action_head != "continuous" else "ee_delta_xyz"
    return {k: v for k, v in out.items() if k in declared}


def add_up_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``up`` subcommand to the ``robot-stack`` CLI's subparsers; return its parser."""
    up = subparsers.add_parser(
        "up",
        help="run a node graph (launch/graphs/*.yaml) as supervised processes",
        epilog="examples:\n"
        "  robot-stack up sim --duration 30\n"
        "  robot-stack up hardware camera_serial:=123456789012 --localhost",
    )
    up.add_argument("graph", help="graph file, or the name of a shipped graph (sim, hardware)")
    up.add_argument("overrides", nargs="*", help="launch arguments as name:=value (as with ros2 launch)")
    up.add_argument("--duration", type=float, help="stop the graph after this many seconds (default: until Ctrl-C)")
    up.add_argument("--log-dir", help="per-node logs <name>.log (default: a temporary folder)")
    up.add_argument("--config-dir", help="parameter files folder (default: ros2_ws/src/robot_stack_ros/config)")
    up.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID for every node (default: inherited)")
    up.add_argument("--localhost", action="store_true", help="keep DDS discovery on this host")
    up.add_argument("--print", action="store_true", help="print each process' command line and exit")
    up.add_argument(
        "-s", "--show-args", action="store_true", help="list the graph's arguments (as ros2 launch -s) and exit"
    )
    up.add_argument("--no-monitor", action="store_true", help="run without the monitor process (no summary, no view)")
    add_view_arguments(up)
    add_robot_argument(up, "; sets the graph's robot:=, and on the sim graph its cell, the policy and decoder")
    up.set_defaults(func=_cmd_up)
    return up
