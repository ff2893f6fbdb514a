"""Policy client node: images + joint states in, the policy's decoded joint trajectory out.

Runs the core :class:`~robot_stack.cycle.PolicyCycle` unchanged (stale-data guard → base-frame XYZ through the
calibration → ZeroMQ :class:`~robot_stack.transport.client.PolicyClient` → decoder/IK), built by the stack builder
(:func:`robot_stack.stack.build_cycle`, :func:`robot_stack.stack.build_decoder`) from the ``stack_config`` preset
(decoder reach policy, pipelining, stuck-policy recovery: the demo's settings) at ``rate_hz``, over a
:class:`~robot_stack.graph.streams.StreamedCamera` (``/camera/color/image_raw`` + ``/camera/aligned_depth_to_color/
image_raw``, paired by stamp) and a :class:`~robot_stack.graph.streams.StreamedArm` (``/joint_states``).

Publishes ``~/trajectory`` (``trajectory_msgs/JointTrajectory``, wall-clock stamp of the first point; remap to the
executor's input) and ``~/action_chunk`` (``std_msgs/Float32MultiArray``, the raw chunk, layout
``horizon x dim``, for debugging). Images with a wrong encoding or size, late/frozen/depth-less frames, stale joint
states, a dead server or an undecodable answer produce no trajectory — the reason is logged and counted in
``/diagnostics``; the executor's watchdog then holds the arm. The client reconnects by itself when the server
comes back.

**Composed mode** (``camera_source`` = ``sim`` | ``recording`` | ``realsense`` instead of ``topics``): this process
owns the camera (:class:`~robot_stack_ros.camera_node.CameraSource`, the camera node's sources and parameters with a
``camera_`` prefix) and reads it on its own thread (:class:`~robot_stack.cameras.threaded.ThreadedCamera`): the policy
takes the newest frame in-process, never over DDS; each frame is republished on ``/camera/color/image_raw`` and
``/camera/aligned_depth_to_color/image_raw`` (with ``image_qos``) from another thread for observers (recorder,
monitoring), latest wins. Run no camera node beside it (``launch/graphs/sim_composed.yaml``). ``robot-stack bench ros``
reports the frame age at the policy in both modes.

The instruction sent with every observation (request meta ``task``, which a language-conditioned model's server
tokenizes) is the ``task`` parameter; it can be changed at run time with ``ros2 param set`` or by publishing a
``std_msgs/String`` on ``~/task``. At start the node asks the server for the model's metadata and sends observations
in the form the model takes (:class:`~robot_stack.cycle.RequestLayout`: base-frame XYZ, or uint16 depth + the
calibration for a model that computes the XYZ in its graph); a server not reachable then means the XYZ form.

With ``task_status_topic`` set (the sim graph: ``/sim_bridge/task_status``, ``diagnostic_msgs/DiagnosticStatus``
with ``episode`` and ``touched``), the client ends an episode the way ``robot-stack demo`` does: once the task
reports the touch it sends no more trajectories (the executor finishes the last one and its watchdog holds the arm)
until a new episode starts; then (``home_on_new_episode``) it sends the arm back to the start posture along a
ruckig move within ``home_speed_fraction`` of the limits (as waypoints: the executor node times and joins them like
any trajectory), as every demo episode starts there, and resumes when the move is done. (Real-time chunking needs
the executing plan, which lives in the executor node: this node sends requests without a prefix.)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32MultiArray, MultiArrayDimension, String
from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg

from robot_stack.cameras.base import Camera
from robot_stack.cameras.threaded import ThreadedCamera
from robot_stack.clock import MonotonicClock
from robot_stack.errors import ConfigError, RobotStackError, TransportError
from robot_stack.graph.diagnostics import Health, StreamMonitor
from robot_stack.graph.streams import StreamedArm, StreamedCamera
from robot_stack.types import JointTrajectory
from robot_stack_ros.camera_node import CameraSource, publishing_camera
from robot_stack_ros.common import (
    COMMAND_QOS,
    STATE_QOS,
    DiagnosticsPublisher,
    declare,
    declare_calibration_root,
    feed_joint_state,
    image_qos,
    require,
    run_node,
    status_values,
    subscribe_camera,
    trajectory_msg,
)

log = logging.getLogger("robot_stack.ros.policy_client")


class _TrajectorySink:
    """What :class:`PolicyCycle` hands trajectories to: here, a publisher (the executor runs in its own node)."""

    def __init__(self, node: PolicyClientNode) -> None:
        self.node = node

    def set_trajectory(self, traj: JointTrajectory) -> bool:
        self.node.traj_pub.publish(trajectory_msg(traj))
        return True


class PolicyClientNode(Node):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__("policy_client")
        from robot_stack.calibration.store import load_calibration
        from robot_stack.kinematics.ik import ik_for
        from robot_stack.stack import build_cycle, build_decoder, load_stack_config
        from robot_stack.transport.client import PolicyClient

        self.endpoint = require(self, "policy_endpoint", str, "ZeroMQ endpoint of the policy server, tcp://host:port")
        self.robot_id = declare(self, "robot_id", "ros-arm-0", "robot id sent to the server (scheduling, metrics)")
        self.camera_id = declare(self, "camera_id", "front", "logical camera name (model input <camera>/rgb, /xyz)")
        self.scene = declare(self, "scene", "sim_tabletop", "calibration scene of the camera")
        self.calibration_root = declare_calibration_root(self)
        self.task = declare(self, "task", "", "instruction sent with every observation (also topic ~/task)")
        self.rate_hz = declare(self, "rate_hz", 10.0, "policy cycles per second, Hz")
        self.timeout_s = declare(self, "request_timeout_s", 0.5, "per-request deadline at the server, s")
        self.max_frame_age_s = declare(self, "max_frame_age_s", 0.25, "older frames are not acted on, s")
        self.max_state_age_s = declare(self, "max_state_age_s", 0.2, "older joint states are not acted on, s")
        self.stack_config = declare(
            self, "stack_config", "demo", "stack preset (robot_stack/configs) or YAML file: decoder, cycle settings"
        )
        self.decoder_name = declare(self, "decoder", "ee_delta_xyz", "action decoder (robot_stack.decoders registry)")
        self.robot_model = declare(self, "robot", "panda", "the arm: panda | ur5 | so101 (IK, limits, home posture)")
        self.policy_manifest = declare(
            self,
            "policy_manifest",
            "",
            "the served model's manifest ('' = the preset's): a latent_vq tokenizer beside it",
        )
        self.orientation = declare(self, "decoder_orientation", "down", "ee decoders: TCP orientation policy")
        self.depth_scale = declare(self, "depth_scale", 0.001, "metres per unit of the depth frames built here")
        self.task_topic = declare(
            self, "task_status_topic", "", "task status (DiagnosticStatus: episode, touched) to pause on ('' = none)"
        )
        self.hold_on_success = declare(
            self, "hold_on_success", True, "send nothing while the task reports a touch, resume on a new episode"
        )
        self.home_on_new_episode = declare(
            self, "home_on_new_episode", True, "new task episode: move to the start posture before the policy resumes"
        )
        self.home_speed_fraction = declare(
            self, "home_speed_fraction", 0.3, "start-posture move: fraction of the joint velocity/accel/jerk limits"
        )
        qos = image_qos(declare(self, "image_qos", "sensor_data", "image QoS: sensor_data | reliable"))
        self.camera_source = declare(
            self, "camera_source", "topics", "topics (a camera node's images over DDS) | sim | recording | realsense "
            "(composed: this process owns the camera and republishes its frames for observers)",
        )  # fmt: skip
        if self.camera_source not in ("topics", "sim", "recording", "realsense"):
            raise ConfigError(f"camera_source {self.camera_source!r}: expected topics, sim, recording or realsense")
        if self.rate_hz <= 0 or self.timeout_s <= 0:
            raise ConfigError(f"rate_hz and request_timeout_s must be positive, got {self.rate_hz}, {self.timeout_s}")
        try:
            calibration = load_calibration(self.scene, self.camera_id, self.calibration_root)
        except RobotStackError as exc:
            raise ConfigError(f"camera calibration: {exc}") from exc
        self.frames = StreamMonitor("frames", expected_hz=0.0, max_silence_s=self.max_frame_age_s * 4)
        self.states = StreamMonitor("joint_states", max_silence_s=self.max_state_age_s)
        self.owned: ThreadedCamera | None = None
        if self.camera_source == "topics":
            self.camera: Camera = StreamedCamera(self.camera_id, calibration.camera, self.depth_scale, self.frames)
        else:
            self.camera = self.owned = self._composed_camera(qos, calibration.camera)
        try:
            config = load_stack_config(
                self.stack_config,
                [
                    f"robot.model={self.robot_model}",
                    *([f"policy.manifest={self.policy_manifest}"] if self.policy_manifest else []),
                    f"decoder.orientation={self.orientation}",
                    f"cycle.max_frame_age_s={self.max_frame_age_s}",
                    f"policy.request_timeout_s={self.timeout_s}",
                ],
            )
            config = config.replace(task=dataclasses.replace(config.task, instruction=self.task))
            self.embodiment = config.embodiment
            ik = ik_for(self.embodiment)
            self.arm = StreamedArm(
                self.embodiment.arm_joints, self.embodiment.limits, ik.fk, None, self.max_state_age_s
            )
            decoder, reach_stats = build_decoder(config, "continuous", self.decoder_name, self.decoder_name)
        except RobotStackError as exc:
            raise ConfigError(f"decoder {self.decoder_name!r}: {exc}") from exc
        self.client = PolicyClient(self.endpoint, self.robot_id, timeout_s=self.timeout_s)
        try:
            metadata: dict[str, Any] | None = self.client.metadata(max(self.timeout_s, 2.0))
        except TransportError as exc:
            metadata = None
            log.warning("policy server not reachable at start (%s): sending the XYZ form", exc)
        self.traj_pub = self.create_publisher(JointTrajectoryMsg, "~/trajectory", COMMAND_QOS)
        self.chunk_pub = self.create_publisher(Float32MultiArray, "~/action_chunk", 10)
        self.cycle = build_cycle(
            config,
            [(self.camera, calibration.projector())],
            self.arm,
            self.client,
            decoder,
            _TrajectorySink(self),
            MonotonicClock(),
            reach_stats=reach_stats,
            period_s=1.0 / self.rate_hz,
            metadata=metadata,
        )
        self.add_on_set_parameters_callback(self._on_parameters)
        self.create_subscription(String, "~/task", self._on_task_text, COMMAND_QOS)
        self.cycles = StreamMonitor("cycles", expected_hz=self.rate_hz, max_silence_s=2.0 / self.rate_hz + 1.0)
        self._step = 0
        self.diag = DiagnosticsPublisher(self)
        inputs = MutuallyExclusiveCallbackGroup()
        if isinstance(self.camera, StreamedCamera):  # camera_source topics
            subscribe_camera(self, self.camera, qos, callback_group=inputs)
        elif self.owned is not None:
            self.owned.start()
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, STATE_QOS, callback_group=inputs)
        self.task_episode: int | None = None
        self.task_touched = False
        self.paused_cycles = 0
        self.homing_moves = 0
        self._home_pending = False
        self._homing_until_ns = 0
        if self.task_topic:
            self.create_subscription(DiagnosticStatus, self.task_topic, self._on_task, 10, callback_group=inputs)
        self.create_timer(1.0 / self.rate_hz, self._run_cycle, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0, self._publish_diagnostics, callback_group=inputs)
        log.info("policy client for %s at %.1f Hz (decoder %s), camera: %s", self.endpoint, self.rate_hz,
                 self.decoder_name, "topics" if self.owned is None else f"composed ({self.camera_source})")  # fmt: skip

    def _composed_camera(self, qos: Any, calibrated: Any) -> ThreadedCamera:
        """Composed mode: the camera opened here, read on its own thread, republished for observers.

        Raises:
            ConfigError: a bad rate, or an image size other than the calibration's (``calibrated``: its model).
        """
        rate = declare(self, "camera_rate_hz", 15.0, "composed: frames per second captured and republished, Hz")
        width = declare(self, "camera_width", 640, "composed: image width, pixels")
        height = declare(self, "camera_height", 480, "composed: image height, pixels")
        seed = declare(self, "camera_seed", 0, "composed, sim: cube placement seed (must match the sim bridge's)")
        path = declare(self, "camera_recording_path", "", "composed, recording: the .db3 file to play")
        serial = declare(self, "camera_serial", "", "composed, realsense: device serial ('' = the only device)")
        frame_id = declare(self, "camera_frame_id", "camera_color_optical_frame", "composed: optical frame id")
        if rate <= 0:
            raise ConfigError(f"camera_rate_hz must be positive, got {rate}")
        if (width, height) != (calibrated.width, calibrated.height):
            raise ConfigError(
                f"camera_width x camera_height {width}x{height} differ from the calibration of {self.camera_id!r} in "
                f"scene {self.scene!r} ({calibrated.width}x{calibrated.height}): set them to the calibrated size"
            )
        source = CameraSource(
            self, self.camera_source, self.camera_id, width, height, rate, seed, self.task_topic, path, serial,
            self.scene, self.robot_model,
        )  # fmt: skip
        threaded, self.observer_streams = publishing_camera(self, source.open(), rate, frame_id, qos, source.lock)
        self.frames = self.observer_streams.monitor  # what diagnostics report as "frames": the frames captured
        log.info("composed camera: %s at %.1f Hz, republished on /camera/... for observers", source.label(), rate)
        return threaded

    # ------------------------------------------------------------------------------------------- inputs
    def _set_task(self, text: str) -> str:
        """Use ``text`` as the instruction from the next cycle on; returns why not ("" when set)."""
        if len(text) > 1000:
            return f"instruction of {len(text)} characters; at most 1000"
        self.task = text
        self.cycle.task = text
        log.info("instruction: %r", text)
        return ""

    def _on_task_text(self, msg: String) -> None:
        why = self._set_task(msg.data)
        if why:
            log.error("~/task rejected: %s", why)

    def _on_parameters(self, params: list[Any]) -> SetParametersResult:
        for param in params:
            if param.name == "task":
                if not isinstance(param.value, str):
                    return SetParametersResult(successful=False, reason="task must be a string")
                why = self._set_task(param.value)
                if why:
                    return SetParametersResult(successful=False, reason=why)
        return SetParametersResult(successful=True)

    def _on_joint_state(self, msg: JointState) -> None:
        feed_joint_state(self.arm, msg, self.states, self.max_state_age_s)

    def _on_task(self, msg: DiagnosticStatus) -> None:
        values = status_values(msg)
        try:
            episode, touched = int(values["episode"]), values["touched"] == "true"
        except (KeyError, ValueError) as exc:
            log.error("task status without a valid episode/touched (%s): %s", exc, values)
            return
        if episode != self.task_episode:
            if self.task_episode is not None:
                log.info("task episode %d started: policy control resumes", episode)
                self._home_pending = bool(self.home_on_new_episode)
            self.task_episode = episode
            self.task_touched = False
        if touched and not self.task_touched:
            log.info("task episode %d: cube touched after %s s; holding until the next episode", episode,
                     values.get("time_to_success_s", "?"))  # fmt: skip
        self.task_touched = touched

    # -------------------------------------------------------------------------------------------- cycle
    def _run_cycle(self) -> None:
        if self.hold_on_success and self.task_touched:
            self.paused_cycles += 1
            if self.paused_cycles == 1:
                self.cycle.close()  # an observation prefetched before the touch is of no use after it
            return
        self.paused_cycles = 0
        problem = self.arm.state_problem(time.monotonic_ns())
        if problem is not None:
            self.cycle.outcomes["stale:joint_state"] += 1
            self.cycles.dropped("stale:joint_state", problem)
            return
        now = time.monotonic_ns()
        if self._home_pending:
            self._home_pending = False
            self._send_home(now)
        if now < self._homing_until_ns:
            return
        try:
            result = self.cycle.run({"step": self._step}, self._step)
        except RobotStackError as exc:  # e.g. the joint state went stale between the check and the read
            self.cycle.outcomes["state"] += 1
            self.cycles.dropped("state", str(exc))
            return
        self._step += 1
        if not result.ok:
            self.cycles.dropped(result.outcome, result.detail)
            return
        self.cycles.received(time.monotonic_ns())
        chunk = result.chunk
        if chunk is not None:
            h, d = chunk.actions.shape
            msg = Float32MultiArray(data=[float(x) for x in chunk.actions.ravel()])
            msg.layout.dim = [
                MultiArrayDimension(label="horizon", size=h, stride=h * d),
                MultiArrayDimension(label=chunk.action_space, size=d, stride=d),
            ]
            self.chunk_pub.publish(msg)

    def _send_home(self, now_ns: int) -> None:
        """Publish a rest-to-rest ruckig move from the current joint state to the start posture (waypoints); pause
        cycles until its end."""
        from robot_stack.cycle import retreat_trajectory

        q = self.arm.read_state().q
        emb = self.embodiment
        traj = retreat_trajectory(
            self.arm.joint_names, q, emb.home_q, emb.limits, now_ns + 50_000_000, self.home_speed_fraction
        )
        self.cycle.close()  # an observation prefetched before the move is of no use after it
        self.traj_pub.publish(trajectory_msg(traj))
        self._homing_until_ns = int(traj.t_ns[-1])
        self.homing_moves += 1
        log.info("new episode: moving to the start posture over %.2f s", (traj.t_ns[-1] - now_ns) / 1e9)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic_ns()
        name = self.get_name()
        outcomes = dict(self.cycle.outcomes)
        stages = self.cycle.times.summary()
        values = [("outcomes", str(outcomes)), ("endpoint", self.endpoint)]
        for stage in ("round_trip", "inference", "decode", "loop_total"):
            if stage in stages:
                values += [(f"{stage}_p50_ms", f"{stages[stage]['p50_ms']:.2f}")]
                values += [(f"{stage}_p99_ms", f"{stages[stage]['p99_ms']:.2f}")]
        values += [("client_timeouts", str(self.client.timeouts)), ("outages_s", str(self.client.gaps_s[-5:]))]
        if self.task_topic:
            values += [("task_episode", str(self.task_episode)), ("task_touched", str(self.task_touched).lower())]
            values += [("homing_moves", str(self.homing_moves))]
        ok = self.cycles.health(name, now)
        if self.hold_on_success and self.task_touched:  # no cycles on purpose: the episode is over
            ok = Health(ok.name, 0, "task done: holding until the next episode", ok.values)
        reports = [ok, self.frames.health(name, now), self.states.health(name, now)]
        reports.append(Health(f"{name}: policy", ok.level, ok.message, tuple(values)))
        self.diag.publish(reports)

    def close(self) -> None:
        self.cycle.close()
        self.client.close()
        if self.owned is not None:
            self.owned.stop()


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyClientNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
