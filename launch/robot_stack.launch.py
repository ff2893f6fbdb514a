"""Hardware graph: RealSense camera + policy client + executor on a ros2_control arm (launch/graphs/hardware.yaml).

    ros2 launch launch/robot_stack.launch.py policy_endpoint:=tcp://gpu-box:5555 command_interface:=joint_trajectory

The same graph runs without the ROS CLI as ``robot-stack up hardware policy_endpoint:=...``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from graph_launch import describe  # noqa: E402

GRAPH = Path(__file__).resolve().parent / "graphs" / "hardware.yaml"


def generate_launch_description():
    return describe(GRAPH)
