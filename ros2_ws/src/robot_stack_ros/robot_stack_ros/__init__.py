"""ROS 2 adapters for robot-stack. Placeholder package: the nodes are delivered by the ROS 2 integration issue."""
