"""Simulation graph: sim bridge + camera + policy server + policy client + executor (launch/graphs/sim.yaml).

    ros2 launch launch/sim.launch.py seed:=3

The same graph runs without the ROS CLI as ``robot-stack up sim seed:=3``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from graph_launch import describe  # noqa: E402

GRAPH = Path(__file__).resolve().parent / "graphs" / "sim.yaml"


def generate_launch_description():
    return describe(GRAPH)
