"""ROS 2 adapters for robot-stack: rclpy nodes that move standard messages in and out of the ROS-free core.

Nodes (console scripts, ``python -m robot_stack_ros.<name>`` without colcon): ``camera_node``,
``policy_client_node``, ``executor_node``, ``sim_bridge_node``, ``recorder_node``; ``bench_probe`` for
``robot-stack bench ros``. Graphs of them: ``launch/graphs/*.yaml`` (``robot-stack up`` / ``ros2 launch``).
"""
