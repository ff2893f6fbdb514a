"""Camera node (managed): aligned RGB-D from the simulated cell, a RealSense recording or a live RealSense.

Publishes, with sensor-data QoS and one stamp (the capture time) per frame:

* ``~/color/image_raw`` (``sensor_msgs/Image`` rgb8), ``~/aligned_depth_to_color/image_raw`` (16UC1, mm),
* ``~/color/camera_info`` (``sensor_msgs/CameraInfo``),
* ``~/points`` (``sensor_msgs/PointCloud2``, x/y/z float32 in the robot base frame) when ``publish_points`` is set
  — base-frame XYZ through the camera's calibration (:class:`~robot_stack.calibration.projection.DepthProjector`),
* ``/diagnostics``: frame rate, capture failures, calibration age and residuals.

Sources (``source`` parameter): ``sim`` renders a twin of the simulated cell whose arm follows ``/joint_states``
(the sim bridge is the robot, this node the camera — the same split as on hardware; with ``task_status_topic``
set it re-places its cube when the sim bridge starts a new episode, from the episode's ``seed``); ``recording`` plays a
``.db3`` file recorded by the RealSense SDK (``recording_path``); ``realsense`` opens a live device (``serial``).
Lifecycle: configure opens the source and loads the calibration (refused with the reason when missing or stale),
activate starts capture, deactivate stops it. ``autostart`` walks configure → activate at start-up.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2, PointField
from std_msgs.msg import Header

from robot_stack.cameras.base import Camera
from robot_stack.cameras.threaded import ThreadedCamera
from robot_stack.errors import CalibrationError, CameraError, ConfigError, RobotStackError, ShapeError
from robot_stack.graph.diagnostics import Health, StreamMonitor, calibration_health
from robot_stack.graph.messages import mono_to_wall, positions_by_name, xyz_cloud
from robot_stack.logs import FoldedLogger
from robot_stack.types import Frame
from robot_stack_ros.common import (
    SENSOR_QOS,
    STATE_QOS,
    DiagnosticsPublisher,
    autostart,
    camera_info_msg,
    declare,
    declare_calibration_root,
    image_msg,
    image_qos,
    run_node,
    stamp,
    status_values,
)

log = logging.getLogger("robot_stack.ros.camera")
#: configure/activate retries every 0.5 s (autostart) while a device or calibration is missing: one line per cause
#: per second, with the count of the folded ones
retry_log = FoldedLogger(log, interval_s=1.0)


class CameraStreams:
    """The publishers of one RGB-D camera (used by this node and by the sim bridge when it renders).

    Args:
        node: owner of the publishers.
        prefix: topic prefix (``"~"`` -> ``~/color/image_raw`` ...).
        frame_id: optical frame of the images.
        base_frame: frame of the point cloud.
        projector: depth -> base-frame XYZ (None = no point cloud).
        points_stride: publish every n-th row and column of the XYZ map as points.
        expected_hz: nominal frame rate (diagnostics).
        qos: QoS of every stream (sensor-data by default).
    """

    def __init__(
        self,
        node: Node,
        prefix: str,
        frame_id: str,
        base_frame: str,
        projector: Any | None,
        points_stride: int,
        expected_hz: float,
        qos: Any = SENSOR_QOS,
    ) -> None:
        self.node = node
        self.frame_id = frame_id
        self.base_frame = base_frame
        self.projector = projector
        self.points_stride = points_stride
        self.color = node.create_publisher(Image, f"{prefix}/color/image_raw", qos)
        self.depth = node.create_publisher(Image, f"{prefix}/aligned_depth_to_color/image_raw", qos)
        self.info = node.create_publisher(CameraInfo, f"{prefix}/color/camera_info", qos)
        self.points = node.create_publisher(PointCloud2, f"{prefix}/points", qos) if projector else None
        self.monitor = StreamMonitor("frames", expected_hz=expected_hz)

    def publish(self, frame: Frame, camera: Camera) -> None:
        """Publish one frame (and its cloud) stamped with its capture time."""
        t_wall = mono_to_wall(frame.t_capture_ns)
        if frame.depth_scale != 0.001:  # REP 118: 16UC1 depth is millimetres
            depth = np.clip(np.rint(frame.depth * (frame.depth_scale / 0.001)), 0, 65535).astype(np.uint16)
        else:
            depth = frame.depth
        self.color.publish(image_msg(frame.color, "rgb8", t_wall, self.frame_id))
        self.depth.publish(image_msg(depth, "16UC1", t_wall, self.frame_id))
        self.info.publish(camera_info_msg(camera.model, t_wall, self.frame_id))
        if self.points is not None and self.projector is not None:
            pts = xyz_cloud(self.projector.to_xyz(frame.depth, frame.depth_scale), self.points_stride)
            self.points.publish(cloud_msg(pts, t_wall, self.base_frame))
        now = time.monotonic_ns()
        self.monitor.received(now, (now - frame.t_capture_ns) / 1e9)


def cloud_msg(points: np.ndarray, t_wall_ns: int, frame_id: str) -> PointCloud2:
    """An unorganised x/y/z float32 ``PointCloud2`` of (M, 3) float32 points."""
    msg = PointCloud2(height=1, width=int(points.shape[0]), is_bigendian=False, point_step=12, is_dense=True)
    msg.header = Header(stamp=stamp(t_wall_ns), frame_id=frame_id)
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
    msg.row_step = 12 * msg.width
    msg.data = points.tobytes()
    return msg


class CameraSource:
    """The camera a node owns, from the camera parameters (the camera node's, or the policy client's in composed mode).

    ``sim`` renders a twin of the simulated cell whose arm follows ``/joint_states`` and (with ``task_topic``)
    whose cube follows the task's episodes; ``recording`` plays a RealSense ``.db3`` file; ``realsense`` opens a live
    device by ``serial`` ('' = the only one). :attr:`lock` guards the twin world: hold it around every read.

    Raises:
        ConfigError: an unknown ``source``.
    """

    def __init__(
        self, node: Node, source: str, camera_id: str, width: int, height: int, rate_hz: float, seed: int = 0,
        task_topic: str = "", recording_path: str = "", serial: str = "", scene: str = "sim_tabletop",
        robot_model: str = "panda",
    ) -> None:  # fmt: skip
        if source not in ("sim", "recording", "realsense"):
            raise ConfigError(f"source {source!r}: expected sim, recording or realsense")
        self.node, self.source, self.camera_id = node, source, camera_id
        self.width, self.height, self.rate_hz, self.seed = width, height, rate_hz, seed
        self.task_topic, self.recording_path, self.serial = task_topic, recording_path, serial
        self.scene, self.robot_model = scene, robot_model
        self.world: Any = None
        self.lock = threading.Lock()
        self.joint_monitor = StreamMonitor("joint_states (sim twin)")
        self._twin_seed = seed

    def label(self) -> str:
        """The source as logs name it (a serial number quoted: it is text, never a number)."""
        if self.source == "realsense":
            return f"live RealSense, serial {self.serial!r}" if self.serial else "live RealSense, the only device"
        return f"recording {self.recording_path!r}" if self.source == "recording" else "simulated cell"

    def open(self) -> Camera:
        """Build the camera (not started); for ``sim`` also subscribe to the twin's inputs.

        Raises:
            ConfigError: ``recording`` without ``recording_path``.
        """
        if self.source == "sim":
            from robot_stack.clock import MonotonicClock
            from robot_stack.sim.camera import SimCamera
            from robot_stack.sim.scene import scene_with_cameras
            from robot_stack.sim.world import SimWorld

            # a render twin of the arm's cell: no step cap (catching up is cheap) so a busy machine does not log
            # skipped time
            cell = scene_with_cameras([self.camera_id], self.scene, self.robot_model)
            self.world = SimWorld(clock=MonotonicClock(), config=cell, max_steps_per_sync=10**9)
            self.world.reset(int(self.seed))
            self._twin_seed = int(self.seed)
            self.node.create_subscription(JointState, "/joint_states", self._on_joint_state, STATE_QOS)
            if self.task_topic:
                # its own group: in the default one, back-to-back renders and 100 Hz joint states starve it
                self.node.create_subscription(
                    DiagnosticStatus, self.task_topic, self._on_task, 10,
                    callback_group=MutuallyExclusiveCallbackGroup(),
                )  # fmt: skip
            return SimCamera(self.world, self.camera_id, self.width, self.height)
        from robot_stack.cameras.realsense import RealSenseCamera, RealSenseConfig

        if self.source == "recording":
            if not self.recording_path:
                raise ConfigError("source=recording needs the parameter recording_path (a .db3 file)")
            cfg = RealSenseConfig(
                camera_id=self.camera_id, playback_path=self.recording_path, width=self.width, height=self.height,
                fps=max(1, round(self.rate_hz)), repeat_playback=True,
            )  # fmt: skip
        else:
            cfg = RealSenseConfig(
                camera_id=self.camera_id, serial=self.serial or None, width=self.width, height=self.height,
                fps=max(1, round(self.rate_hz)),
            )  # fmt: skip
        return RealSenseCamera(cfg)

    def _on_joint_state(self, msg: JointState) -> None:
        emb = self.world.embodiment
        try:
            q = positions_by_name(msg.name, msg.position, emb.arm_joints, "joint_states")
        except ShapeError as exc:
            self.joint_monitor.dropped("malformed", str(exc))
            return
        with self.lock:
            self.world.set_arm_q(np.clip(q, emb.limits.lower, emb.limits.upper))
        self.joint_monitor.received(time.monotonic_ns())

    def _on_task(self, msg: DiagnosticStatus) -> None:
        try:
            seed = int(status_values(msg)["seed"])
        except (KeyError, ValueError) as exc:
            log.error("task status without a valid seed (%s): the twin's cube stays where it is", exc)
            return
        if seed == self._twin_seed:
            return
        with self.lock:
            q = self.world.arm_q()
            self.world.reset(seed)  # the same seeded cube pose as the sim bridge's new episode
            self.world.set_arm_q(q)
            self._twin_seed = seed
        log.info("new task episode: twin cube re-placed (seed %d)", seed)


def publishing_camera(
    node: Node, camera: Camera, rate_hz: float, frame_id: str, qos: Any, read_lock: threading.Lock | None = None
) -> tuple[ThreadedCamera, CameraStreams]:
    """The composed mode's camera: ``camera`` read at ``rate_hz`` on its own thread; its reader (the policy) takes
    the newest frame in-process, and each frame is republished on ``/camera/...`` (the camera node's topics) from
    another thread for observers — latest wins, so a slow transport never delays capture or the policy."""
    streams = CameraStreams(node, "/camera", frame_id, "base", None, 1, rate_hz, qos)
    threaded = ThreadedCamera(camera, rate_hz, lambda frame: streams.publish(frame, camera), read_lock)
    return threaded, streams


class CameraNode(LifecycleNode):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__("camera")
        self.source = declare(self, "source", "sim", "frame source: sim | recording | realsense")
        self.camera_id = declare(self, "camera_id", "front", "logical camera name (selects its calibration)")
        self.rate_hz = declare(self, "rate_hz", 15.0, "frames per second to publish, Hz")
        self.width = declare(self, "width", 640, "image width, pixels")
        self.height = declare(self, "height", 480, "image height, pixels")
        self.frame_id = declare(self, "frame_id", "camera_color_optical_frame", "optical frame id of the images")
        self.base_frame = declare(self, "base_frame", "base", "robot base frame id (point cloud frame)")
        self.scene = declare(self, "scene", "sim_tabletop", "calibration scene (calibration/<scene>/<camera>.yaml)")
        self.calibration_root = declare_calibration_root(self)
        self.publish_points = declare(self, "publish_points", False, "publish ~/points (base-frame XYZ cloud)")
        self.points_stride = declare(self, "points_stride", 4, "cloud subsampling: every n-th row and column")
        self.recording_path = declare(self, "recording_path", "", "source=recording: the .db3 file to play")
        self.serial = declare(self, "serial", "", "source=realsense: device serial ('' = the only device)")
        self.seed = declare(self, "seed", 0, "source=sim: cube placement seed (must match the sim bridge's)")
        self.robot_model = declare(
            self, "robot", "panda", "source=sim: the arm of the simulated cell (panda | ur5 | so101)"
        )
        self.task_topic = declare(
            self, "task_status_topic", "", "source=sim: task status whose episode seed places the twin's cube"
        )
        self.autostart = declare(self, "autostart", True, "configure and activate at start-up")
        self.qos = image_qos(declare(self, "image_qos", "sensor_data", "image/cloud QoS: sensor_data | reliable"))
        if self.rate_hz <= 0:
            raise ConfigError(f"rate_hz must be positive, got {self.rate_hz}")
        self.owned = CameraSource(
            self, self.source, self.camera_id, self.width, self.height, self.rate_hz, int(self.seed),
            self.task_topic, self.recording_path, self.serial, self.scene, self.robot_model,
        )  # fmt: skip
        self.diag = DiagnosticsPublisher(self)
        self.camera: Camera | None = None
        self.streams: CameraStreams | None = None
        self.calibration: Any = None
        self.failures = 0
        self._capture_timer: Any = None
        self.create_timer(1.0, self._publish_diagnostics)
        autostart(self, self.autostart)

    # ---------------------------------------------------------------------------------------- lifecycle
    def _source_label(self) -> str:
        return self.owned.label()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            projector = None
            if self.publish_points or self.scene:
                from robot_stack.calibration.store import load_calibration

                try:
                    self.calibration = load_calibration(self.scene, self.camera_id, self.calibration_root)
                    projector = self.calibration.projector() if self.publish_points else None
                except CalibrationError:
                    if self.publish_points:
                        raise
                    retry_log.warning(
                        "no usable calibration for %s in %s: no calibration health", self.camera_id, self.scene
                    )
            if self.camera is None:  # a retried configure reuses the source (and its subscriptions)
                self.camera = self.owned.open()
            self.streams = CameraStreams(
                self, "~", self.frame_id, self.base_frame, projector, int(self.points_stride), self.rate_hz, self.qos
            )
        except (RobotStackError, OSError) as exc:
            retry_log.error("camera configure failed: %s", exc)
            return TransitionCallbackReturn.FAILURE
        log.info("camera %s configured (%s, %dx%d)", self.camera_id, self._source_label(), self.width, self.height)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.camera is not None
        try:
            self.camera.start()
        except CameraError as exc:
            retry_log.error("camera start failed (%s): %s", self._source_label(), exc)
            return TransitionCallbackReturn.FAILURE
        self._capture_timer = self.create_timer(1.0 / self.rate_hz, self._capture)
        log.info("camera %s active at %.1f Hz", self.camera_id, self.rate_hz)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._capture_timer is not None:
            self._capture_timer.cancel()
            self.destroy_timer(self._capture_timer)
            self._capture_timer = None
        if self.camera is not None:
            self.camera.stop()
        return super().on_deactivate(state)

    def close(self) -> None:
        if self.camera is not None:
            self.camera.stop()

    # ------------------------------------------------------------------------------------------ streams
    def _capture(self) -> None:
        assert self.camera is not None and self.streams is not None
        try:
            with self.owned.lock:
                frame = self.camera.read()
        except CameraError as exc:
            self.failures += 1
            self.streams.monitor.dropped("capture", str(exc))
            if self.failures == 1 or self.failures % 50 == 0:
                log.error("capture failed (%d so far): %s", self.failures, exc)
            return
        try:
            self.streams.publish(frame, self.camera)
        except ShapeError as exc:
            self.streams.monitor.dropped("frame", str(exc))
            log.error("frame not published: %s", exc)

    def _publish_diagnostics(self) -> None:
        retry_log.flush()  # counts of retries that stopped (e.g. the device appeared) are not lost
        now = time.monotonic_ns()
        name = self.get_name()
        state = self._state_machine.current_state[1]
        reports = [Health(f"{name}: lifecycle", 0 if state == "active" else 1, state, (("source", self.source),))]
        if self.streams is not None:
            reports.append(self.streams.monitor.health(name, now))
        if self.owned.world is not None:
            reports.append(self.owned.joint_monitor.health(name, now))
        cal = self.calibration
        if cal is not None:
            reports.append(
                calibration_health(
                    name,
                    cal.camera_id,
                    cal.created,
                    cal.valid_days,
                    cal.residuals,
                    datetime.now(timezone.utc),
                    cal.method,
                )  # fmt: skip
            )
        self.diag.publish(reports)


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
