"""ament_python package of the robot-stack ROS 2 nodes (nodes arrive with the ROS 2 integration issue)."""

from setuptools import setup

package_name = "robot_stack_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=[package_name],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    description="Thin ROS 2 adapters over the ROS-free robot_stack core.",
    license="Apache-2.0",
)
