"""Simulation graph in composed mode: sim bridge + policy server + policy client owning the camera + executor
(graphs/sim_composed.yaml).

    ros2 launch robot_stack_ros sim_composed.launch.py seed:=3

The same graph runs without the ROS CLI as ``robot-stack up sim_composed seed:=3``.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from graph_actions import describe_shipped  # noqa: E402


def generate_launch_description():
    return describe_shipped(HERE, "sim_composed")
