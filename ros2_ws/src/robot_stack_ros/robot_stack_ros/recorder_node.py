"""Recorder node: teleoperated (or policy) episodes from the graph into a LeRobot-layout dataset.

Hands everything to the core :class:`~robot_stack.dataset.recorder.Recorder` over a
:class:`~robot_stack.dataset.writer.DatasetWriter` (crash-safe episode commit, MP4 RGB, lossless depth, control-rate
stream, calibration snapshot): H.264 and depth encoding run on the recorder's own threads behind bounded queues, never
in this node's callbacks; a frame that finds the queues full is dropped and counted (the episode's metadata says how
many). This node only collects:

* frames: ``/camera/color/image_raw`` + ``/camera/aligned_depth_to_color/image_raw`` paired by stamp
  (:class:`~robot_stack.graph.streams.StreamedCamera`, size checked against the calibration);
* state: ``/joint_states`` (reliable, 1 s of samples queued: each is recorded); commands: ``~/commands``
  (``std_msgs/Float64MultiArray`` joint set-points, remap to the controller's command topic — what the teleop device
  or the executor sent);
* while recording, each new colour + depth pair whose capture time is at least ``0.9 / fps`` after the last
  recorded one becomes a frame row (the frame; the joint state and the command in force at its capture time, its FK
  as TCP target): frames are chosen and paired by capture time as they arrive, so a delivery burst (reliable QoS
  holds later samples while it repairs an earlier one) neither loses a frame nor pairs it with a later arm state; a
  frame that arrives before the joint state measured after its capture waits for it (at most ``max_state_age_s``),
  so the pairing does not depend on which topic delivered first; a camera faster than ``fps`` is thinned evenly
  (counted as ``decimated``);
  every joint state becomes a control-rate sample (measured q, dq and the last command).

Services (``std_srvs``): ``~/start_episode`` (Trigger), ``~/stop_episode`` (SetBool: ``data`` = success; drains the
encoding queues, then commits), ``~/abort_episode`` (Trigger). A frame older than ``max_frame_age_s`` or a stale joint
state is not recorded (the episode's drop counters say how many); a node killed mid-episode loses only that episode
(the writer's repair on the next open removes its remains).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from robot_stack.errors import ConfigError, RobotStackError
from robot_stack.graph.diagnostics import Health, StreamMonitor
from robot_stack.graph.messages import stamp_problem
from robot_stack.graph.streams import StreamedArm, StreamedCamera
from robot_stack.types import Frame
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
    subscribe_camera,
)

log = logging.getLogger("robot_stack.ros.recorder")


class RecorderNode(Node):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__("recorder")
        from robot_stack.calibration.store import load_calibration
        from robot_stack.dataset import CameraStream, DatasetSpec, DatasetWriter
        from robot_stack.dataset.recorder import Recorder
        from robot_stack.kinematics.ik import panda_ik
        from robot_stack.robots import panda

        self.root = require(self, "root", str, "dataset folder (created if missing, appended to otherwise)")
        self.fps = declare(self, "fps", 10, "frames per second of the per-frame table and the videos, Hz")
        self.camera_id = declare(self, "camera_id", "front", "recorded camera (selects its calibration)")
        self.scene = declare(self, "scene", "sim_tabletop", "calibration scene of the camera")
        self.calibration_root = declare_calibration_root(self)
        self.task = declare(self, "task", "", "instruction stored with every episode (required to record)")
        self.max_frame_age_s = declare(self, "max_frame_age_s", 0.25, "older frames are not recorded, s")
        self.max_state_age_s = declare(self, "max_state_age_s", 0.1, "older joint states are not recorded, s")
        self.control_rate_hz = declare(self, "control_rate_hz", 100.0, "nominal joint-state rate (highrate/), Hz")
        queue_frames = declare(self, "queue_frames", 64, "frames waiting for the encoders before new ones are dropped")
        qos = image_qos(declare(self, "image_qos", "sensor_data", "image QoS: sensor_data | reliable"))
        if self.fps <= 0:
            raise ConfigError(f"fps must be a positive integer, got {self.fps}")
        try:
            cal = load_calibration(self.scene, self.camera_id, self.calibration_root)
            spec = DatasetSpec(
                fps=int(self.fps),
                cameras=(CameraStream(self.camera_id, cal.camera.width, cal.camera.height),),
                joint_names=panda.ARM_JOINTS,
                control_rate_hz=float(self.control_rate_hz),
            )
            self.writer = DatasetWriter(self.root, spec, calibrations={self.camera_id: cal})
            self.recorder = Recorder(self.writer, queue_frames=int(queue_frames))
        except RobotStackError as exc:
            raise ConfigError(f"cannot open dataset {self.root}: {exc}") from exc
        self.ik = panda_ik()
        self.frames = StreamMonitor("frames", max_silence_s=1.0)
        self.states = StreamMonitor("joint_states", max_silence_s=self.max_state_age_s * 5)
        self.rows = StreamMonitor("recorded rows", expected_hz=float(self.fps))
        self.camera = StreamedCamera(self.camera_id, cal.camera, spec.depth_scale, self.frames)
        # states and commands kept for as long as a frame may be taken late: each frame gets the arm at its capture
        history = math.ceil(2.0 * (self.max_frame_age_s + self.max_state_age_s) * self.control_rate_hz) + 16
        self.arm = StreamedArm(panda.ARM_JOINTS, panda.LIMITS, self.ik.fk, None, self.max_state_age_s, history)
        self.commands: deque[tuple[int, np.ndarray]] = deque(maxlen=history)  # (monotonic receipt ns, q (n,) rad)
        self.pending: deque[Frame] = deque()  # frames waiting for the joint state in force at their capture
        self.pending_lock = threading.Lock()  # inputs and the stop service (another callback group) settle them
        self.last_seq = 0
        self.last_recorded_ns = -(2**62)  # capture time of the last recorded frame
        self.min_spacing_ns = int(0.9e9 / self.fps)  # 10 % below the period: capture jitter never skips a frame
        self.committed: list[Any] = []
        group = MutuallyExclusiveCallbackGroup()  # inputs and rows: quick (encoding runs on the recorder's threads)
        control = MutuallyExclusiveCallbackGroup()  # start/stop/abort: stop waits for the encoders to drain
        subscribe_camera(self, self.camera, qos, callback_group=group, on_image=self._record_new_frame)
        # every joint state is a control-rate sample: 1 s of them may wait while the node is busy (STATE_QOS keeps 5,
        # enough for a controller that only needs the newest, not for a recording)
        state_qos = QoSProfile(
            depth=max(STATE_QOS.depth, math.ceil(self.control_rate_hz)), reliability=STATE_QOS.reliability,
            history=STATE_QOS.history, durability=STATE_QOS.durability,
        )  # fmt: skip
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, state_qos, callback_group=group)
        self.create_subscription(Float64MultiArray, "~/commands", self._on_command, COMMAND_QOS, callback_group=group)
        self.create_service(Trigger, "~/start_episode", self._start, callback_group=control)
        self.create_service(SetBool, "~/stop_episode", self._stop, callback_group=control)
        self.create_service(Trigger, "~/abort_episode", self._abort, callback_group=control)
        self.diag = DiagnosticsPublisher(self)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=group)
        log.info("recorder ready: %s (%d episodes), %d fps, camera %s", self.root, self.writer.num_episodes,
                 self.fps, self.camera_id)  # fmt: skip

    # ------------------------------------------------------------------------------------------- inputs
    def _on_command(self, msg: Float64MultiArray) -> None:
        q = np.asarray(msg.data, dtype=np.float64)
        if q.shape != (len(self.arm.joint_names),) or not np.all(np.isfinite(q)):
            log.error("command with %d values (or non-finite) ignored; expected %d", q.size, len(self.arm.joint_names))
            return
        self.commands.append((time.monotonic_ns(), q))

    def _command_at(self, t_ns: int) -> np.ndarray | None:
        """The newest command received at or before monotonic ``t_ns`` (None: none kept from before then)."""
        for t_received, q in reversed(self.commands):
            if t_received <= t_ns:
                return q
        return None

    def _on_joint_state(self, msg: JointState) -> None:
        from robot_stack.dataset import JointSample

        state = feed_joint_state(self.arm, msg, self.states, self.max_state_age_s)
        if state is None:
            return
        t_ns, q, dq = state
        if self.pending:
            self._settle_frames()  # a frame that came before this state may now be paired
        if self.recorder.recording:
            q_cmd = self.commands[-1][1] if self.commands else q  # the last command received
            self.recorder.add_joint_sample(JointSample(t_ns, q, dq, q_cmd, 1.0))  # False = buffer full: counted

    # ------------------------------------------------------------------------------------------ episodes
    def _skip(self, reason: str, detail: str) -> None:
        """Count a frame not recorded; log the first of each reason per episode and every 50th."""
        self.rows.dropped(reason, detail)
        n = self.rows.drops[reason]
        if n == 1 or n % 50 == 0:
            log.warning("frame not recorded (%s, %d so far this run): %s", reason, n, detail)

    def _record_new_frame(self) -> None:
        """A new pair completed: refuse it now if it is already too old, else queue it until its pairing is settled
        (:meth:`_settle_frames`)."""
        try:
            frame = self.camera.read()
        except RobotStackError:
            return  # no complete pair yet
        if frame.seq == self.last_seq or not self.recorder.recording:
            return
        self.last_seq = frame.seq
        problem = stamp_problem(frame.t_capture_ns, time.monotonic_ns(), self.max_frame_age_s)
        if problem is not None:
            self._skip("stale_frame", problem)
            return
        with self.pending_lock:
            self.pending.append(frame)
        self._settle_frames()

    def _settle_frames(self, flush: bool = False) -> None:
        """Record the queued frames, oldest first, whose pairing is settled: a joint state measured at or after the
        capture has arrived (frames and states travel on separate topics, so a frame may come first; only then is
        the state in force at its capture known), or ``max_state_age_s`` has passed since the capture (the state
        stream is late or gone: the frame gets what is kept, or is counted as ``input``), or ``flush`` (the episode
        stops)."""
        with self.pending_lock:
            while self.pending:
                frame = self.pending[0]
                newest = self.arm.latest_t_ns
                waited_s = (time.monotonic_ns() - frame.t_capture_ns) / 1e9
                if not flush and (newest is None or newest < frame.t_capture_ns) and waited_s < self.max_state_age_s:
                    return
                self.pending.popleft()
                self._record_frame(frame)

    def _record_frame(self, frame: Frame) -> None:
        """Hand a frame, with the joint state and the command in force at its capture, to the recorder when it is
        due by capture time (references only: encoding runs on the recorder's threads)."""
        from robot_stack.dataset import FrameRow

        if frame.t_capture_ns - self.last_recorded_ns < self.min_spacing_ns:
            self.rows.dropped("decimated", "camera faster than fps")  # thinned evenly, by capture time
            return
        try:
            state = self.arm.state_at(frame.t_capture_ns)  # the arm when the image was captured
        except RobotStackError as exc:
            self._skip("input", str(exc))
            return
        q_cmd = self._command_at(frame.t_capture_ns)
        q_target = q_cmd if q_cmd is not None else state.q
        row = FrameRow(state.t_ns, (frame.t_capture_ns,), state, q_target, 1.0, self.ik.fk(q_target))
        now = time.monotonic_ns()
        if self.recorder.add_frame(row, [frame]):
            self.last_recorded_ns = frame.t_capture_ns
            self.rows.received(now, (now - frame.t_capture_ns) / 1e9)
        elif self.recorder.recording:  # the encoders are behind: dropped and counted by the recorder
            self.rows.dropped("queue_full", "encoding queues full")

    def _start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self.task:
            response.success, response.message = False, "set the parameter 'task' (the instruction) first"
            return response
        try:
            index = self.recorder.start_episode(self.task, {"source": "ros2 recorder_node"})
        except RobotStackError as exc:  # e.g. an episode is already being recorded
            response.success, response.message = False, str(exc)
            return response
        self.rows = StreamMonitor("recorded rows", expected_hz=float(self.fps))  # this episode's skips
        with self.pending_lock:
            self.pending.clear()
        self.last_recorded_ns = -(2**62)
        response.success, response.message = True, f"recording episode {index}"
        log.info(response.message)
        return response

    def _stop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if not self.recorder.recording:
            response.success, response.message = False, "no episode is being recorded"
            return response
        self._settle_frames(flush=True)  # frames still waiting for their joint state are paired now
        drops = dict(self.rows.drops)
        try:
            done = self.recorder.stop_episode(bool(request.data), {"drops": drops})
        except Exception as exc:  # noqa: BLE001 - any writer failure: the episode is lost, the node runs on
            response.success, response.message = False, f"episode not committed: {exc}"
            log.error(response.message)
            return response
        self.committed.append(done)
        stats = self.recorder.stats()
        response.success = True
        response.message = (
            f"committed episode {done.episode_index}: {done.length} frames, success={done.success}, "
            f"{stats.dropped_frames} dropped by full encoding queues, skipped {drops}"
        )
        log.info(response.message)
        return response

    def _abort(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        index = self.recorder.stats().episode_index
        with self.pending_lock:
            self.pending.clear()
        if self.recorder.discard():
            response.success, response.message = True, f"episode {index} discarded"
        else:
            response.success, response.message = False, "no episode is being recorded"
        return response

    def _publish_diagnostics(self) -> None:
        self._settle_frames()  # frames whose joint state never came are settled here when the stream stops
        now = time.monotonic_ns()
        name = self.get_name()
        stats = self.recorder.stats()
        status = Health(
            f"{name}: dataset", 0, "recording" if stats.recording else "idle",
            (("root", str(self.root)), ("episodes", str(self.writer.num_episodes)),
             ("frames", str(stats.frames if stats.recording else 0)),
             ("dropped_frames", str(stats.dropped_frames)), ("dropped_joint_samples", str(stats.dropped_joint_samples)),
             ("queue_depth", str(dict(stats.queue_depth)))),
        )  # fmt: skip
        reports = [status, self.frames.health(name, now), self.states.health(name, now)]
        if stats.recording:
            reports.append(self.rows.health(name, now))
        self.diag.publish(reports)

    def close(self) -> None:
        index = self.recorder.stats().episode_index
        if self.recorder.discard():
            log.warning("shutting down mid-episode: episode %d discarded", index)


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
