"""Turn a robot-stack graph file (``graphs/*.yaml``) into a ``ros2 launch`` description (shared by the launch files).

The graph file is the single source of truth: ``robot-stack up <graph>`` runs the same nodes with the same
parameters, remappings and restart policy (robot_stack/graph/spec.py: :meth:`NodeLaunch.launch_kwargs` here,
:meth:`NodeLaunch.argv` there). What this module adds on top of those keyword arguments, so that both launchers
behave alike:

* every graph argument is a ``DeclareLaunchArgument`` with its description, type, choices and a readable default
  (``$(dirname)`` / ``$(python_package X)`` expanded): ``ros2 launch <file> -s`` lists them;
* an argument on the command line that the graph does not declare (``sed:=3``) stops the launch with the reason,
  as ``robot-stack up`` refuses it (check off with ``describe(..., check_command_line=False)`` when this description
  is included from a launch file whose own arguments share the command line);
* string parameters stay strings (``ParameterValue(value, value_type=str)``): launch_ros parses plain strings as
  YAML, which turns a serial number such as ``123456789012`` into an integer (and ``036522070660`` into an octal one);
* ``respawn_max_retries`` = the node's ``max_restarts``; a node that exits with ``CONFIG_ERROR_EXIT_CODE`` (it refused
  its configuration) is shut down instead of restarted; a ``required`` node's exit shuts the launch down.

This file is installed beside the launch files (``share/robot_stack_ros/launch``); its name does not end in
``launch.py``, so ``ros2 launch`` does not offer it as a launch file.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from launch.actions import DeclareLaunchArgument, EmitEvent, ExecuteProcess, LogInfo, OpaqueFunction, Shutdown
from launch.events import matches_action
from launch.events.process import ShutdownProcess
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription
from robot_stack.graph.spec import (
    CONFIG_ERROR_EXIT_CODE,
    GraphSpec,
    NodeLaunch,
    command_line_overrides,
    launch_layout,
    load_graph,
)


def typed_parameters(parameters: list[Any]) -> list[Any]:
    """``launch_kwargs()["parameters"]`` with every ``str`` (or list of ``str``) inline value wrapped in
    ``ParameterValue(..., value_type=str)`` so that launch_ros passes it on as a string; files stay paths."""
    out: list[Any] = []
    for entry in parameters:
        if not isinstance(entry, dict):
            out.append(entry)  # a parameter file
            continue
        wrapped = {}
        for name, value in entry.items():
            if isinstance(value, str):
                value = ParameterValue(value, value_type=str)
            elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                value = ParameterValue(value, value_type=list[str])
            wrapped[name] = value
        out.append(wrapped)
    return out


def on_node_exit(node: NodeLaunch, event: Any, context: Any) -> list[Any]:
    """``on_exit`` of one graph node: a configuration error is not retried, a required node ends the launch."""
    actions: list[Any] = []
    if event.returncode == CONFIG_ERROR_EXIT_CODE:
        actions.append(
            LogInfo(
                msg=f"[{node.name}] refused its configuration (exit code {CONFIG_ERROR_EXIT_CODE}): not restarted; "
                "its reason is in its output above"
            )
        )
        # decided before launch's respawn delay ends (respawn_delay_s >= MIN_RESPAWN_DELAY_S): no new start
        actions.append(EmitEvent(event=ShutdownProcess(process_matcher=matches_action(event.action))))
    if node.required:
        actions.append(Shutdown(reason=f"required node {node.name} exited with code {event.returncode}"))
    return actions


def node_action(node: NodeLaunch) -> Node | ExecuteProcess:
    """The ``launch_ros`` ``Node`` (or ``ExecuteProcess``) of one resolved graph node."""
    kwargs = node.launch_kwargs()
    kwargs["on_exit"] = functools.partial(on_node_exit, node)
    if not node.is_ros_node:
        return ExecuteProcess(**kwargs)
    kwargs["parameters"] = typed_parameters(kwargs["parameters"])
    return Node(**kwargs)


def graph_actions(spec: GraphSpec, values: dict[str, str], config_dir: str | Path | None = None) -> list[Any]:
    """Launch actions of ``spec`` with argument ``values``, one per graph node, in start order.

    Raises:
        ConfigError: an undeclared argument, a value of the wrong type, a missing parameter file.
    """
    return [node_action(node) for node in spec.resolve(values, config_dir)]


def declared_arguments(spec: GraphSpec) -> list[DeclareLaunchArgument]:
    """One ``DeclareLaunchArgument`` per graph argument: description, choices and readable default."""
    defaults = spec.defaults()
    return [
        DeclareLaunchArgument(
            name,
            default_value=defaults[name],
            description=arg.help(),
            choices=list(arg.choices) or None,
        )
        for name, arg in spec.arguments.items()
    ]


def describe(
    graph_file: str | Path, config_dir: str | Path | None = None, check_command_line: bool = True
) -> LaunchDescription:
    """A LaunchDescription declaring the graph's arguments and starting its nodes (see the module docstring)."""
    spec = load_graph(graph_file)

    def setup(context: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if check_command_line:
            spec.check_argument_names(command_line_overrides(context.argv))
        values = {name: LaunchConfiguration(name).perform(context) for name in spec.arguments}
        return graph_actions(spec, values, config_dir)

    return LaunchDescription([*declared_arguments(spec), OpaqueFunction(function=setup)])


def describe_shipped(launch_dir: str | Path, graph: str) -> LaunchDescription:
    """:func:`describe` of the shipped graph ``graph`` for launch files in ``launch_dir``, installed with the package
    or in the source tree (:func:`robot_stack.graph.spec.launch_layout`)."""
    graphs, config = launch_layout(launch_dir)
    return describe(graphs / f"{graph}.yaml", config)
