"""Test helper (not a test module): a real rclpy node that watches a running graph from the test process.

Records arrival times per topic, the sim bridge's TCP-to-cube distance and the executor's state from
``/diagnostics`` and ``/executor/state``, and the task's episodes from ``/sim_bridge/task_status``. Imported by
tests/test_ros_*.py after ``pytest.importorskip("rclpy")``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

TOPICS: dict[str, tuple[Any, Any]] = {
    "/joint_states": (JointState, 10),
    "/camera/color/image_raw": (Image, qos_profile_sensor_data),
    "/camera/aligned_depth_to_color/image_raw": (Image, qos_profile_sensor_data),
    "/policy/trajectory": (JointTrajectory, 10),
    "/forward_position_controller/commands": (Float64MultiArray, 10),
    "/joint_trajectory_controller/joint_trajectory": (JointTrajectory, 10),
}


def ros_env(domain_id: int) -> dict[str, str]:
    """Environment of one isolated graph: its own domain, discovery on this host only."""
    return {"ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOCALHOST_ONLY": "1"}


def unique_domain_id() -> int:
    """A ROS domain id (1..101, the range safe for every DDS port mapping) derived from this process' pid."""
    return 1 + os.getpid() % 101


class GraphProbe:
    """Subscribes to the graph's main topics in a background spin thread (its own rclpy context)."""

    def __init__(self, domain_id: int) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("test_probe", context=self.context)
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.joint_q: list[tuple[float, list[float]]] = []
        self.tcp_to_cube: list[tuple[float, float]] = []
        self.executor_states: list[tuple[float, str]] = []
        self.diagnostics: dict[str, dict[str, Any]] = {}
        self.task: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        for topic, (kind, qos) in TOPICS.items():
            self.node.create_subscription(kind, topic, lambda msg, t=topic: self._on(t, msg), qos)
        self.node.create_subscription(String, "/executor/state", self._on_state, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.node.create_subscription(DiagnosticStatus, "/sim_bridge/task_status", self._on_task, 50)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.05)

    def _on(self, topic: str, msg: Any) -> None:
        now = time.monotonic()
        with self._lock:
            self.arrivals[topic].append(now)
            if topic == "/joint_states":
                self.joint_q.append((now, list(msg.position)))

    def _on_state(self, msg: String) -> None:
        with self._lock:
            self.executor_states.append((time.monotonic(), msg.data))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        now = time.monotonic()
        with self._lock:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                self.diagnostics[status.name] = {"level": status.level[0], "message": status.message, **values}
                if status.name.endswith(": world") and "tcp_to_cube_m" in values:
                    self.tcp_to_cube.append((now, float(values["tcp_to_cube_m"])))

    def _on_task(self, msg: DiagnosticStatus) -> None:
        with self._lock:
            self.task.append((time.monotonic(), {kv.key: kv.value for kv in msg.values}))

    def touches(self, since: float = 0.0) -> list[tuple[float, dict[str, str]]]:
        """First ``touched`` task status of every episode seen after ``since`` (monotonic s): (arrival, values)."""
        seen: dict[str, tuple[float, dict[str, str]]] = {}
        with self._lock:
            for t, values in self.task:
                if t >= since and values.get("touched") == "true" and values["episode"] not in seen:
                    seen[values["episode"]] = (t, values)
        return list(seen.values())

    def rate_hz(self, topic: str, since: float, until: float | None = None) -> float:
        """Messages per second of ``topic`` between ``since`` and ``until`` (monotonic s)."""
        until = until if until is not None else time.monotonic()
        with self._lock:
            n = sum(1 for t in self.arrivals[topic] if since <= t <= until)
        return n / max(until - since, 1e-9)

    def state(self) -> str | None:
        with self._lock:
            return self.executor_states[-1][1] if self.executor_states else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
