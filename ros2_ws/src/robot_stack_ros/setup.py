"""ament_python package of the robot-stack ROS 2 nodes: thin rclpy adapters over the ROS-free robot_stack core.

Installs (colcon build) the nodes as console scripts in lib/robot_stack_ros, and into share/robot_stack_ros the
parameter files (config/), the launch files with their helper (launch/: ``ros2 launch robot_stack_ros
sim.launch.py``) and the graph files they read (graphs/). The launch and graph files live in the repository's
``launch/`` folder, the one source that ``robot-stack up`` reads too.
"""

from glob import glob
from pathlib import Path

from setuptools import setup

package_name = "robot_stack_ros"
HERE = Path(__file__).resolve().parent
#: the repository's launch/ folder, relative to this file (setuptools wants relative data_files paths)
LAUNCH = Path("..", "..", "..", "launch")


def _files(pattern: str) -> list[str]:
    """Paths (relative to this file) matching ``pattern`` relative to this file, sorted; none = a broken checkout."""
    found = sorted(str(Path(p).relative_to(HERE)) for p in glob(str(HERE / pattern)))
    if not found:
        raise SystemExit(f"robot_stack_ros setup.py: nothing matches {pattern} beside {HERE}")
    return found


setup(
    name=package_name,
    version="0.2.0",
    packages=[package_name],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/config", _files("config/*.yaml")),
        (
            f"share/{package_name}/launch",
            [*_files(str(LAUNCH / "*.launch.py")), *_files(str(LAUNCH / "graph_actions.py"))],
        ),
        (f"share/{package_name}/graphs", _files(str(LAUNCH / "graphs" / "*.yaml"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    description="Thin ROS 2 adapters over the ROS-free robot_stack core.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "camera_node = robot_stack_ros.camera_node:main",
            "policy_client_node = robot_stack_ros.policy_client_node:main",
            "executor_node = robot_stack_ros.executor_node:main",
            "sim_bridge_node = robot_stack_ros.sim_bridge_node:main",
            "recorder_node = robot_stack_ros.recorder_node:main",
            "bench_probe = robot_stack_ros.bench_probe:main",
            "monitor_node = robot_stack_ros.monitor_node:main",
        ],
    },
)
