"""The robot-stack process graph, ROS-free.

* :mod:`robot_stack.graph.spec` — one declarative description of a node graph (YAML in ``launch/graphs/``), from
  which both the ``ros2 launch`` file and ``robot-stack up`` are derived;
* :mod:`robot_stack.graph.supervisor` — ``robot-stack up``: every node a separate process, monitored, restarted or
  stopped per policy, the whole graph shut down cleanly on SIGINT/SIGTERM;
* :mod:`robot_stack.graph.messages` — conversions between the core's arrays/values and the plain fields of the
  standard ROS messages (image encodings, stamps, trajectories, joint states, point clouds), tested without ROS;
* :mod:`robot_stack.graph.diagnostics` — rate, latency and drop accounting that the nodes publish as diagnostics;
* :mod:`robot_stack.graph.episodes` — the demo task's episodes (touch, timeout, reset) on the sim bridge's world.

Nothing here imports rclpy: the rclpy adapters live in ``ros2_ws/src/robot_stack_ros``.
"""
