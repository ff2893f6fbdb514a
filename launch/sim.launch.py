"""Simulation graph: sim bridge + camera + policy server + policy client + executor (graphs/sim.yaml).

    ros2 launch robot_stack_ros sim.launch.py seed:=3        # installed with the package (colcon build)
    ros2 launch launch/sim.launch.py seed:=3                 # from the repository
    ros2 launch robot_stack_ros sim.launch.py -s             # the arguments, their descriptions and defaults

The same graph runs without the ROS CLI as ``robot-stack up sim seed:=3``.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from graph_actions import describe_shipped  # noqa: E402


def generate_launch_description():
    return describe_shipped(HERE, "sim")
