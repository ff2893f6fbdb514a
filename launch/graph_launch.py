"""Turn a robot-stack graph file (launch/graphs/*.yaml) into a ``ros2 launch`` description.

The graph file is the single source of truth: ``robot-stack up <graph>`` runs the same nodes with the same
parameters and remappings (robot_stack/graph/spec.py: :meth:`NodeLaunch.launch_kwargs` here, :meth:`NodeLaunch.argv`
there). Every graph argument becomes a launch argument (``ros2 launch ... name:=value``).
"""

from __future__ import annotations

from pathlib import Path

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from robot_stack.graph.spec import PACKAGE_CONFIG_DIR, load_graph


def _config_dir() -> Path:
    """share/robot_stack_ros/config of the installed package (colcon), else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("robot_stack_ros")) / "config"
    except Exception:  # not installed with colcon: the repository's copy
        return PACKAGE_CONFIG_DIR


def graph_actions(graph_file: str | Path, values: dict[str, str]) -> list:
    """Launch actions of ``graph_file`` with argument ``values``: one Node / ExecuteProcess per graph node; a
    required node's exit shuts the launch down."""
    actions = []
    for node in load_graph(graph_file).resolve(values, _config_dir()):
        kwargs = node.launch_kwargs()
        if node.required:
            kwargs["on_exit"] = Shutdown(reason=f"required node {node.name} exited")
        actions.append(Node(**kwargs) if node.is_ros_node else ExecuteProcess(**kwargs))
    return actions


def describe(graph_file: str | Path) -> LaunchDescription:
    """A LaunchDescription declaring the graph's arguments and starting its nodes."""
    spec = load_graph(graph_file)

    def setup(context, *args, **kwargs):
        values = {name: LaunchConfiguration(name).perform(context) for name in spec.arguments}
        return graph_actions(graph_file, values)

    declared = [DeclareLaunchArgument(name, default_value=default) for name, default in spec.arguments.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=setup)])
