"""Monitor node: what ``robot-stack up`` shows and reports of a running graph.

Subscribes to the sim bridge's ``task_status`` (episodes, touches), the executor's ``state`` (holds),
``/joint_states``, the policy's trajectories and (with a viewer) the camera's colour and aligned depth, and hands
them to the core :class:`~robot_stack.graph.monitor.GraphMonitor`. Parameters: ``summary_file`` (JSON written on
exit), ``save`` (an ``.rrd`` to record), ``display`` (live rerun viewer), ``web_port``, ``robot`` (viewer model),
``scene`` / ``camera_id`` (calibration of the camera frustum).
"""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg

from robot_stack.errors import ShapeError
from robot_stack.graph.messages import image_from_fields, positions_by_name
from robot_stack.graph.monitor import GraphMonitor
from robot_stack.types import Frame
from robot_stack_ros.common import (
    COMMAND_QOS,
    STATE_QOS,
    declare,
    declare_calibration_root,
    fields_from_image,
    image_qos,
    run_node,
    status_values,
    trajectory_from_msg,
)


class MonitorNode(Node):
    def __init__(self) -> None:
        super().__init__("monitor")
        self.summary_file = str(declare(self, "summary_file", "", "JSON summary written on exit"))
        save = str(declare(self, "save", "", "record the graph into this .rrd"))
        display = bool(declare(self, "display", False, "show the graph live in rerun"))
        web_port = int(declare(self, "web_port", 9090, "rerun web viewer port (headless --display)"))
        robot = str(declare(self, "robot", "panda", "robot description for the viewer"))
        scene = str(declare(self, "scene", "sim_tabletop", "calibration scene of the camera"))
        camera_id = str(declare(self, "camera_id", "front", "camera whose frustum is drawn"))
        camera_prefix = str(declare(self, "camera_prefix", "/camera", "camera topics prefix"))
        calibration_root = declare_calibration_root(self)
        self.live: Any = None
        view = None
        if save or display:
            from robot_stack.calibration.store import load_calibration
            from robot_stack.robots.registry import get_embodiment
            from robot_stack.viewer.live import LiveView
            from robot_stack.viewer.stack_view import CellView

            self.live = LiveView("robot-stack-up", save=save or None, display=display, web_port=web_port)
            cal = load_calibration(scene, camera_id, calibration_root)
            self._joint_names = get_embodiment(robot).arm_joints
            view = CellView(self.live, robot, self._joint_names, [(camera_id, cal.camera, cal.T_base_cam)])
            self._camera_id = camera_id
            self._depth: Any = None
            self.create_subscription(Image, f"{camera_prefix}/color/image_raw", self._color, image_qos("reliable"))
            self.create_subscription(
                Image, f"{camera_prefix}/aligned_depth_to_color/image_raw", self._depth_cb, image_qos("reliable")
            )
            self.create_subscription(JointState, "/joint_states", self._joints, STATE_QOS)
            self.create_subscription(JointTrajectoryMsg, "/policy/trajectory", self._trajectory, COMMAND_QOS)
        self.monitor = GraphMonitor(view)
        self.create_subscription(DiagnosticStatus, "/sim_bridge/task_status", self._task, 10)
        self.create_subscription(String, "/executor/state", self._state, 10)

    def _task(self, msg: DiagnosticStatus) -> None:
        self.monitor.on_task_status(status_values(msg))

    def _state(self, msg: String) -> None:
        self.monitor.on_executor_state(msg.data, time.monotonic_ns())

    def _joints(self, msg: JointState) -> None:
        try:
            q = positions_by_name(msg.name, msg.position, self._joint_names, "joint state")
        except ShapeError as exc:  # another arm's or a malformed message: the view skips it
            self.get_logger().debug(f"joint state not shown: {exc}")
            return
        self.monitor.on_joint_state(time.monotonic_ns(), q)

    def _trajectory(self, msg: JointTrajectoryMsg) -> None:
        try:
            self.monitor.on_trajectory(trajectory_from_msg(msg))
        except Exception as exc:  # a malformed trajectory is the executor's business; the view skips it
            self.get_logger().debug(f"trajectory not shown: {exc}")

    def _depth_cb(self, msg: Image) -> None:
        self._depth = image_from_fields(fields_from_image(msg))

    def _color(self, msg: Image) -> None:
        if self._depth is None:
            return
        rgb = image_from_fields(fields_from_image(msg))
        depth = self._depth
        if depth.shape[:2] != rgb.shape[:2]:
            return
        self.monitor.on_frame(Frame(rgb, depth, 0.001, time.monotonic_ns(), self._camera_id))

    def close(self) -> None:
        if self.summary_file:
            self.monitor.write(self.summary_file)
        if self.live is not None:
            self.live.close()


def main(args: Any = None) -> int:
    return run_node(MonitorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
