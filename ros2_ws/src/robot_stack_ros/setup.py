"""ament_python package of the robot-stack ROS 2 nodes: thin rclpy adapters over the ROS-free robot_stack core."""

from glob import glob

from setuptools import setup

package_name = "robot_stack_ros"

setup(
    name=package_name,
    version="0.2.0",
    packages=[package_name],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/config", glob("config/*.yaml")),
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
