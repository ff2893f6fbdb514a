"""rclpy plumbing shared by the robot-stack nodes: parameters, message conversion, diagnostics, the main loop.

Every check on the data itself lives in :mod:`robot_stack.graph.messages` / :mod:`robot_stack.graph.diagnostics`
(ROS-free, tested without a graph); this module only copies message fields in and out.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import CallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg
from trajectory_msgs.msg import JointTrajectoryPoint

from robot_stack.errors import ConfigError, ShapeError
from robot_stack.graph.diagnostics import Health, StreamMonitor
from robot_stack.graph.messages import (
    ImageFields,
    image_to_fields,
    join_stamp,
    mono_to_wall,
    positions_by_name,
    split_stamp,
    stamp_problem,
    trajectory_from_points,
    trajectory_to_points,
    wall_to_mono,
)
from robot_stack.graph.spec import CONFIG_ERROR_EXIT_CODE
from robot_stack.graph.streams import StreamedArm, StreamedCamera
from robot_stack.types import CameraModel, JointTrajectory
from robot_stack_ros.spin import NodeExecutor

__all__ = [
    "COMMAND_QOS",
    "IMAGE_HISTORY_DEPTH",
    "RELIABLE_IMAGE_QOS",
    "SENSOR_QOS",
    "STATE_QOS",
    "DiagnosticsPublisher",
    "accepted_joint_state",
    "autostart",
    "camera_info_msg",
    "declare",
    "feed_joint_state",
    "fields_from_image",
    "image_qos",
    "image_msg",
    "joint_state_msg",
    "require",
    "run_node",
    "stamp",
    "stamp_ns",
    "subscribe_camera",
    "trajectory_from_msg",
    "trajectory_msg",
]

#: Images and clouds: best effort, keep the newest (a late image is worthless, a retransmitted one is worse).
SENSOR_QOS = qos_profile_sensor_data
#: Joint states: reliable, shallow (each message supersedes the previous).
STATE_QOS = QoSProfile(
    depth=5, reliability=QoSReliabilityPolicy.RELIABLE, history=QoSHistoryPolicy.KEEP_LAST,
    durability=QoSDurabilityPolicy.VOLATILE,
)  # fmt: skip
#: Trajectories and commands: reliable, depth 1 (only the newest matters).
COMMAND_QOS = QoSProfile(
    depth=1, reliability=QoSReliabilityPolicy.RELIABLE, history=QoSHistoryPolicy.KEEP_LAST,
    durability=QoSDurabilityPolicy.VOLATILE,
)  # fmt: skip

#: Frames a reliable image stream may hold while its subscriber catches up: 1 s at 30 Hz.
IMAGE_HISTORY_DEPTH = 30

#: Images delivered reliably: large RGB-D frames are UDP-fragmented and best effort loses a whole frame with any
#: fragment. KEEP_LAST history is what bounds "reliable": a sample that finds the subscriber's history full replaces
#: the oldest one, so a Python subscriber that falls a few frames behind (a busy core, a repaired fragment) loses
#: frames. At depth 2 (~67 ms of slack at 30 Hz) 9-18 % of 30 Hz 640x480 pairs were lost with a CPU hog beside the
#: graph, at depth 5 ~3 %, at depth 30 none (``robot-stack bench ros``: the delivered fraction; measured while the
#: nodes still spun on rclpy's busy-looping MultiThreadedExecutor, see ``spin.py``, so the slack is generous now).
RELIABLE_IMAGE_QOS = QoSProfile(
    depth=IMAGE_HISTORY_DEPTH, reliability=QoSReliabilityPolicy.RELIABLE, history=QoSHistoryPolicy.KEEP_LAST,
    durability=QoSDurabilityPolicy.VOLATILE,
)  # fmt: skip


def image_qos(name: str) -> QoSProfile:
    """``sensor_data`` (best effort, the ROS convention for cameras) or ``reliable`` (:data:`RELIABLE_IMAGE_QOS`).

    Raises:
        ConfigError: another name.
    """
    if name not in ("sensor_data", "reliable"):
        raise ConfigError(f"image_qos {name!r}: expected sensor_data or reliable")
    return SENSOR_QOS if name == "sensor_data" else RELIABLE_IMAGE_QOS


_TYPES = {
    bool: Parameter.Type.BOOL,
    int: Parameter.Type.INTEGER,
    float: Parameter.Type.DOUBLE,
    str: Parameter.Type.STRING,
}


def declare(node: Node, name: str, default: Any, description: str) -> Any:
    """Declare a parameter with its description and default; return its value (from files/overrides if set).

    An integer given for a float parameter is accepted (``rate_hz:=100``, as launch arguments are typed).

    Raises:
        ConfigError: the value given has another type than the default's.
    """
    descriptor = ParameterDescriptor(description=description, dynamic_typing=True)
    value = node.declare_parameter(name, default, descriptor).value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        hint = ""
        if isinstance(default, str) and isinstance(value, (int, float)):
            hint = (
                "; the text was parsed as a number on the way (leading zeros are lost that way): give it as a "
                f"string — a graph argument of type str, or quoted on a command line: -p {name}:=\"'<text>'\""
            )
        raise ConfigError(
            f"parameter {name!r} ({description}): expected a {type(default).__name__} like {default!r}, got "
            f"{value!r}{hint}"
        )
    return value


def declare_calibration_root(node: Node) -> str | None:
    """Declare ``calibration_root`` (the calibration folder; '' = the repository's) and return it, None for the
    default: what :func:`robot_stack.calibration.load_calibration` takes as its ``root``."""
    return str(declare(node, "calibration_root", "", "calibration folder ('' = the repository's)")) or None


def require(node: Node, name: str, kind: type, description: str) -> Any:
    """Declare a parameter that has no safe default; return its value.

    Raises:
        ConfigError: it was not given (the node refuses to start and says which parameter to set).
    """
    node.declare_parameter(name, _TYPES[kind], ParameterDescriptor(description=description))
    try:
        value = node.get_parameter(name).value
    except ParameterUninitializedException:
        value = None
    if value is None or value == "":
        raise ConfigError(
            f"parameter {name!r} is required ({description}); set it in the node's parameter file or with "
            f"--ros-args -p {name}:=..."
        )
    return value


def stamp(t_wall_ns: int) -> Time:
    sec, nanosec = split_stamp(t_wall_ns)
    return Time(sec=sec, nanosec=nanosec)


def stamp_ns(t: Time) -> int:
    """A ``builtin_interfaces/Time`` as wall ns."""
    return join_stamp(t.sec, t.nanosec)


def image_msg(array: np.ndarray, encoding: str, t_wall_ns: int, frame_id: str) -> Image:
    f = image_to_fields(array, encoding)
    msg = Image(height=f.height, width=f.width, encoding=f.encoding, is_bigendian=0, step=f.step)
    msg.header = Header(stamp=stamp(t_wall_ns), frame_id=frame_id)
    msg.data = f.data
    return msg


def fields_from_image(msg: Image) -> ImageFields:
    return ImageFields(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data), bool(msg.is_bigendian))


def camera_info_msg(model: CameraModel, t_wall_ns: int, frame_id: str) -> CameraInfo:
    """``sensor_msgs/CameraInfo`` of a pinhole :class:`CameraModel` (plumb_bob distortion, identity R)."""
    msg = CameraInfo(height=model.height, width=model.width, distortion_model="plumb_bob")
    msg.header = Header(stamp=stamp(t_wall_ns), frame_id=frame_id)
    msg.d = [float(x) for x in model.distortion]
    msg.k = [float(x) for x in model.K.ravel()]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [model.fx, 0.0, model.cx, 0.0, 0.0, model.fy, model.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def joint_state_msg(
    names: Sequence[str], q: np.ndarray, dq: np.ndarray | None, t_wall_ns: int, frame_id: str = ""
) -> JointState:
    msg = JointState(name=list(names), position=[float(x) for x in q])
    if dq is not None:
        msg.velocity = [float(x) for x in dq]
    msg.header = Header(stamp=stamp(t_wall_ns), frame_id=frame_id)
    return msg


def accepted_joint_state(
    msg: JointState, names: Sequence[str], monitor: StreamMonitor, max_age_s: float
) -> tuple[int, np.ndarray, np.ndarray] | None:
    """A ``JointState`` checked and reordered to ``names``, or None after counting on ``monitor`` why it was dropped.

    Returns ``(t_ns, q, dq)``: stamp on this process' monotonic clock (ns), positions ``(n,)`` rad and velocities
    ``(n,)`` rad/s (zeros when the message carries none). Dropped, with the reason: missing/duplicated joints or a
    wrong number of values (``malformed``), a stamp older than ``max_age_s`` (``stale``) or from the future.
    """
    try:
        q = positions_by_name(msg.name, msg.position, names, "joint_states position")
        dq = positions_by_name(msg.name, msg.velocity, names, "joint_states velocity") if len(msg.velocity) else 0 * q
    except ShapeError as exc:
        monitor.dropped("malformed", str(exc))
        return None
    t_ns = wall_to_mono(stamp_ns(msg.header.stamp))
    now = time.monotonic_ns()
    problem = stamp_problem(t_ns, now, max_age_s)
    if problem is not None:
        monitor.dropped(problem.split(":")[0], problem)
        return None
    monitor.received(now, (now - t_ns) / 1e9)
    return t_ns, q, dq


def feed_joint_state(
    arm: StreamedArm, msg: JointState, monitor: StreamMonitor, max_age_s: float
) -> tuple[int, np.ndarray, np.ndarray] | None:
    """Hand a ``JointState`` to ``arm`` when :func:`accepted_joint_state` accepts it (reordered to the arm's joints);
    return it, ``(t_ns, q, dq)``, or None when it was dropped (and counted on ``monitor``)."""
    state = accepted_joint_state(msg, arm.joint_names, monitor, max_age_s)
    if state is not None:
        arm.update(*state)
    return state


def subscribe_camera(
    node: Node,
    camera: StreamedCamera,
    qos: QoSProfile,
    *,
    prefix: str = "/camera",
    callback_group: CallbackGroup | None = None,
    on_image: Callable[[], None] | None = None,
) -> None:
    """Feed ``camera`` from a camera node's topics, ``<prefix>/color/image_raw`` and
    ``<prefix>/aligned_depth_to_color/image_raw``: each image is pushed with its stamp (the camera pairs them by
    stamp); a malformed one is logged and counted by the camera's monitor. ``on_image`` runs after each accepted
    image (a pair may have completed)."""

    def push(msg: Image, into: Callable[[int, ImageFields], Any]) -> None:
        try:
            into(stamp_ns(msg.header.stamp), fields_from_image(msg))
        except ShapeError as exc:
            logging.getLogger(f"robot_stack.ros.{node.get_name()}").error("image rejected: %s", exc)
            return
        if on_image is not None:
            on_image()

    for topic, into in (("color", camera.push_color), ("aligned_depth_to_color", camera.push_depth)):
        node.create_subscription(
            Image, f"{prefix}/{topic}/image_raw", lambda m, into=into: push(m, into), qos, callback_group=callback_group
        )


def autostart(node: LifecycleNode, enabled: bool, period_s: float = 0.5) -> None:
    """Walk a lifecycle node through configure -> activate at start-up (when ``enabled``): every ``period_s`` the
    next transition is triggered (a failed configure, e.g. a device still missing, is tried again) until it is
    active; then the timer is cancelled."""
    if not enabled:
        return
    timer: Any = None

    def step() -> None:
        state = node._state_machine.current_state[1]
        if state == "unconfigured":
            node.trigger_configure()
        elif state == "inactive":
            node.trigger_activate()
        elif state == "active":
            timer.cancel()

    timer = node.create_timer(period_s, step)


def trajectory_msg(traj: JointTrajectory, frame_id: str = "") -> JointTrajectoryMsg:
    """A core trajectory (monotonic times) as ``trajectory_msgs/JointTrajectory`` (wall stamp + offsets)."""
    t0_wall, offsets, positions = trajectory_to_points(traj)
    msg = JointTrajectoryMsg(joint_names=list(traj.joint_names))
    msg.header = Header(stamp=stamp(t0_wall), frame_id=frame_id)
    for off, row in zip(offsets, positions, strict=True):
        sec, nanosec = split_stamp(int(off))
        point = JointTrajectoryPoint(positions=[float(x) for x in row])
        point.time_from_start.sec, point.time_from_start.nanosec = sec, nanosec
        msg.points.append(point)
    return msg


def trajectory_from_msg(msg: JointTrajectoryMsg, want: Sequence[str] | None = None) -> JointTrajectory:
    """``trajectory_msgs/JointTrajectory`` -> core trajectory; raises ShapeError on malformed content."""
    return trajectory_from_points(
        msg.joint_names,
        stamp_ns(msg.header.stamp),
        [join_stamp(p.time_from_start.sec, p.time_from_start.nanosec) for p in msg.points],
        [list(p.positions) for p in msg.points],
        want,
    )


def single_point_trajectory(
    names: Sequence[str], q: np.ndarray, lookahead_ns: int, now_mono_ns: int
) -> JointTrajectoryMsg:
    """A one-point ``JointTrajectory`` reaching ``q`` ``lookahead_ns`` after now: what joint_trajectory_controller
    takes as a streamed set-point."""
    msg = JointTrajectoryMsg(joint_names=list(names))
    msg.header = Header(stamp=stamp(mono_to_wall(now_mono_ns)))
    point = JointTrajectoryPoint(positions=[float(x) for x in q])
    point.time_from_start.sec, point.time_from_start.nanosec = split_stamp(lookahead_ns)
    msg.points.append(point)
    return msg


class DiagnosticsPublisher:
    """Publishes :class:`Health` reports as one ``diagnostic_msgs/DiagnosticArray`` on ``/diagnostics``."""

    def __init__(self, node: Node, topic: str = "/diagnostics") -> None:
        self._pub = node.create_publisher(DiagnosticArray, topic, 10)
        self.last: list[Health] = []

    def publish(self, reports: Iterable[Health]) -> None:
        self.last = list(reports)
        msg = DiagnosticArray()
        msg.header = Header(stamp=stamp(mono_to_wall(time.monotonic_ns())))
        msg.status = [status_msg(r) for r in self.last]
        self._pub.publish(msg)


def status_msg(report: Health) -> DiagnosticStatus:
    """A :class:`Health` report as one ``diagnostic_msgs/DiagnosticStatus``."""
    status = DiagnosticStatus(
        level=bytes([report.level]), name=report.name, message=report.message, hardware_id=report.hardware_id
    )
    status.values = [KeyValue(key=k, value=v) for k, v in report.values]
    return status


def status_values(msg: DiagnosticStatus) -> dict[str, str]:
    """The key/value pairs of a ``diagnostic_msgs/DiagnosticStatus`` as a dict."""
    return {kv.key: kv.value for kv in msg.values}


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_node(factory: Callable[[], Node], args: Sequence[str] | None = None, threads: int = 2) -> int:
    """``main`` of a node: init rclpy, build the node, spin until SIGINT/SIGTERM, clean up.

    SIGINT and SIGTERM end the spin in this process (rclpy's own handlers are off), so the node's ``close()``
    — e.g. the executor decelerating to a stop — runs while its publishers still work. A node whose construction
    raises :class:`ConfigError` (missing or invalid parameter) is refused: the reason is logged and the process
    exits with :data:`~robot_stack.graph.spec.CONFIG_ERROR_EXIT_CODE` (2), which neither launcher restarts. Returns
    the exit code.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    rclpy.init(args=list(sys.argv if args is None else args), signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    node: Node | None = None
    try:
        try:
            node = factory()
        except ConfigError as exc:
            logging.getLogger("robot_stack.ros").error("refusing to start: %s", exc)
            return CONFIG_ERROR_EXIT_CODE  # never restarted by robot-stack up or ros2 launch
        executor = NodeExecutor(num_threads=threads)  # rclpy's thread pool without its busy loop (spin.py)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # no second Ctrl-C may cut the node's cleanup short; the caller's handlers come back afterwards (a test or
        # tool running nodes in-process otherwise went on ignoring SIGINT, and so did every process it spawned)
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if node is not None:
                close = getattr(node, "close", None)
                if close is not None:
                    close()
                node.destroy_node()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        rclpy.try_shutdown()
    return 0
