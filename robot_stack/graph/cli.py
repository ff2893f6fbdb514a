"""``robot-stack up <graph> [name:=value ...]``: run a graph file's nodes as supervised processes.

Wired into the main CLI with :func:`add_up_parser`. The same graph runs on hardware with
``ros2 launch launch/robot_stack.launch.py graph:=<graph> name:=value``.
"""

from __future__ import annotations

import argparse
import sys

from robot_stack.stack.cli import add_robot_argument

__all__ = ["add_up_parser", "robot_arguments"]


def _cmd_up(args: argparse.Namespace) -> int:
    from robot_stack.errors import ConfigError
    from robot_stack.graph.spec import load_graph, parse_overrides
    from robot_stack.graph.supervisor import Supervisor

    try:
        spec = load_graph(args.graph)
        overrides = parse_overrides(args.overrides)
        if args.robot:
            overrides = {**robot_arguments(spec.arguments, args.robot), **overrides}
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
    supervisor = Supervisor(nodes, log_dir=args.log_dir, echo=not args.quiet, env=env)
    print(f"robot-stack up: {spec.name} ({len(nodes)} processes), logs in {supervisor.log_dir}", file=sys.stderr)
    code = supervisor.run(args.duration)
    if supervisor.failure:
        print(f"graph stopped: {supervisor.failure}", file=sys.stderr)
    return code


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
    up = subparsers.add_parser("up", help="run a node graph (launch/graphs/*.yaml) as supervised processes")
    up.add_argument("graph", help="graph file, or the name of a shipped graph (sim, hardware)")
    up.add_argument("overrides", nargs="*", help="launch arguments as name:=value (as with ros2 launch)")
    up.add_argument("--duration", type=float, help="stop the graph after this many seconds (default: until Ctrl-C)")
    up.add_argument("--log-dir", help="per-node logs <name>.log (default: a temporary folder)")
    up.add_argument("--config-dir", help="parameter files folder (default: ros2_ws/src/robot_stack_ros/config)")
    up.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID for every node (default: inherited)")
    up.add_argument("--localhost", action="store_true", help="keep DDS discovery on this host")
    up.add_argument("--quiet", action="store_true", help="do not echo node output (it still goes to the logs)")
    up.add_argument("--print", action="store_true", help="print each process' command line and exit")
    add_robot_argument(up, "; sets the graph's robot:=, and on the sim graph its cell, the policy and decoder")
    up.set_defaults(func=_cmd_up)
    return up
