"""Hardware graph: RealSense camera + policy client + executor on a ros2_control arm (graphs/hardware.yaml).

    ros2 launch robot_stack_ros robot_stack.launch.py policy_endpoint:=tcp://gpu-box:5555 camera_serial:=123456789012
    ros2 launch launch/robot_stack.launch.py ...             # from the repository
    ros2 launch robot_stack_ros robot_stack.launch.py -s     # the arguments, their descriptions and defaults

The same graph runs without the ROS CLI as ``robot-stack up hardware policy_endpoint:=...``.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from graph_actions import describe_shipped  # noqa: E402


def generate_launch_description():
    return describe_shipped(HERE, "hardware")
