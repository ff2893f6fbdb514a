"""Sim bridge node: the MuJoCo Panda cell exposed as a ros2_control-style robot, so the graph runs without hardware.

* publishes ``/joint_states`` (``sensor_msgs/JointState``, the 7 arm joints) at ``rate_hz``;
* takes position commands where ros2_control controllers take them: ``~/position_commands``
  (``std_msgs/Float64MultiArray``, 7 values in joint order — forward_command_controller's ``~/commands``) and
  ``~/joint_trajectory`` (``trajectory_msgs/JointTrajectory`` — joint_trajectory_controller's topic); the graph
  files remap both to the controllers' topic names. Commands are validated by :class:`SimRobot` (shape, finite,
  within limits): a bad one is logged, counted and not applied;
* with ``camera_rate_hz`` > 0 it also renders its own camera and publishes it like the camera node
  (``~/camera/...``), for graphs that want one MuJoCo process instead of a rendering twin;
* runs the demo task (:class:`~robot_stack.sim.task.ReachTouchTask`, "reach and touch the red cube") in episodes
  like ``robot-stack demo``: checked at ``rate_hz``, reported on ``~/task_status``
  (``diagnostic_msgs/DiagnosticStatus``: episode, seed, state running/touched/timeout, touched, distance_m,
  elapsed_s, time_to_success_s, touches, timeouts; at 10 Hz and at every change) and in ``/diagnostics``.
  ``~/reset`` (``std_srvs/Trigger``) starts a new episode (new seeded cube pose, arm left where the executor holds
  it: the policy client brings it to the start posture); episode 0's clock starts at the first command; with
  ``auto_reset`` one starts ``reset_pause_s`` after a touch or a timeout;
* ``/diagnostics``: state and command rates, world steps and skipped time, TCP-to-cube distance, task.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg

from robot_stack.clock import MonotonicClock
from robot_stack.errors import ConfigError, RobotStackError, ShapeError
from robot_stack.graph.diagnostics import Health, StreamMonitor
from robot_stack.graph.episodes import EpisodeStatus, TaskEpisodes
from robot_stack.graph.messages import mono_to_wall
from robot_stack.sim.robot import SimRobot
from robot_stack.sim.task import ReachTouchTask
from robot_stack.sim.world import SimWorld
from robot_stack_ros.common import (
    COMMAND_QOS,
    STATE_QOS,
    DiagnosticsPublisher,
    declare,
    image_qos,
    joint_state_msg,
    run_node,
    status_msg,
    trajectory_from_msg,
)

log = logging.getLogger("robot_stack.ros.sim_bridge")


def _interp(traj: Any, t_ns: int) -> np.ndarray:
    """Linear interpolation of a core trajectory at ``t_ns`` (clamped to its ends): (n,) rad."""
    t = np.asarray(traj.t_ns, dtype=np.float64)
    return np.array([np.interp(float(t_ns), t, traj.positions[:, j]) for j in range(traj.positions.shape[1])])


class SimBridgeNode(Node):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__("sim_bridge")
        self.rate_hz = declare(self, "rate_hz", 100.0, "joint_states publishing rate, Hz")
        self.seed = declare(self, "seed", 0, "cube placement seed of the simulated cell")
        self.command_timeout_s = declare(
            self, "command_timeout_s", 0.5, "commands older than this are reported silent (diagnostics), s"
        )
        self.camera_rate_hz = declare(self, "camera_rate_hz", 0.0, "render and publish ~/camera/... (0 = off), Hz")
        self.camera_id = declare(self, "camera_id", "front", "scene camera rendered when camera_rate_hz > 0")
        self.image_qos = declare(self, "image_qos", "sensor_data", "camera QoS: sensor_data | reliable")
        self.max_episode_s = declare(self, "max_episode_s", 20.0, "an episode without a touch times out after, s")
        self.touch_radius_m = declare(
            self, "touch_radius_m", 0.02, "TCP to cube top-centre distance that counts as a touch, m"
        )
        self.auto_reset = declare(self, "auto_reset", True, "start a new episode after a touch or timeout")
        self.reset_pause_s = declare(self, "reset_pause_s", 2.0, "pause between an episode's end and auto reset, s")
        if self.rate_hz <= 0 or self.max_episode_s <= 0 or self.touch_radius_m <= 0:
            raise ConfigError(
                f"rate_hz, max_episode_s and touch_radius_m must be positive, got {self.rate_hz}, "
                f"{self.max_episode_s}, {self.touch_radius_m}"
            )
        from robot_stack.sim.scene import scene_with_cameras

        self.robot_model = declare(self, "robot", "panda", "the arm: panda | ur5 | so101 (its simulated cell)")
        self.world = SimWorld(
            clock=MonotonicClock(), config=scene_with_cameras([self.camera_id], robot=self.robot_model)
        )
        self.robot = SimRobot(self.world)
        task = ReachTouchTask(self.world, self.max_episode_s, self.touch_radius_m)
        self.episodes = TaskEpisodes(task, int(self.seed), bool(self.auto_reset), float(self.reset_pause_s))
        self.task_status: EpisodeStatus = self.episodes.status()
        self.task_pub = self.create_publisher(DiagnosticStatus, "~/task_status", 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.names = self.world.embodiment.arm_joints
        self.state_pub = self.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.create_subscription(Float64MultiArray, "~/position_commands", self._on_position, COMMAND_QOS)
        self.create_subscription(JointTrajectoryMsg, "~/joint_trajectory", self._on_trajectory, COMMAND_QOS)
        self.commands = StreamMonitor("commands", max_silence_s=self.command_timeout_s)
        self.states = StreamMonitor("joint_states", expected_hz=self.rate_hz)
        self.trajectory: Any = None
        self._commanded = False
        self.diag = DiagnosticsPublisher(self)
        self.create_timer(1.0 / self.rate_hz, self._tick)
        self.create_timer(1.0, self._diagnostics)
        self.create_timer(0.1, self._publish_task)
        self.camera: Any = None
        if self.camera_rate_hz > 0:
            from robot_stack.sim.camera import SimCamera
            from robot_stack_ros.camera_node import CameraStreams

            self.camera = SimCamera(self.world, self.camera_id)
            self.camera.start()
            self.streams = CameraStreams(
                self, "~/camera", "camera_color_optical_frame", "base", None, 4, self.camera_rate_hz,
                image_qos(self.image_qos),
            )  # fmt: skip
            self.create_timer(1.0 / self.camera_rate_hz, self._render)
        log.info("sim bridge up: %d joints, %.0f Hz joint states, seed %d", len(self.names), self.rate_hz, self.seed)

    def _apply(self, q: np.ndarray, source: str) -> None:
        try:
            self.robot.command(q)
        except RobotStackError as exc:
            self.commands.dropped("rejected", str(exc))
            log.error("%s command not applied: %s", source, exc)
            return
        if not self._commanded:  # episode 0 starts with the control loop (as the demo's does), not at start-up
            self._commanded = True
            if self.episodes.episode == 0 and not self.episodes.status().touched:
                self.episodes.restart_clock()
                log.info("first command: episode 0 clock started")
        self.commands.received(time.monotonic_ns())

    def _on_position(self, msg: Float64MultiArray) -> None:
        q = np.asarray(msg.data, dtype=np.float64)
        if q.shape != (len(self.names),):
            self.commands.dropped("shape", f"{q.shape[0]} values, expected {len(self.names)}")
            log.error("position command with %d values ignored; expected %d in %s order", q.shape[0],
                      len(self.names), self.names)  # fmt: skip
            return
        self.trajectory = None
        self._apply(q, "position")

    def _on_trajectory(self, msg: JointTrajectoryMsg) -> None:
        try:
            self.trajectory = trajectory_from_msg(msg, self.names)
        except (ShapeError, RobotStackError) as exc:
            self.commands.dropped("malformed", str(exc))
            log.error("trajectory ignored: %s", exc)

    def _tick(self) -> None:
        if self.trajectory is not None:
            self._apply(_interp(self.trajectory, time.monotonic_ns()), "trajectory")
        st = self.robot.read_state()
        self.state_pub.publish(joint_state_msg(self.names, st.q, st.dq, mono_to_wall(st.t_ns)))
        self.states.received(time.monotonic_ns())
        self.task_status, changed = self.episodes.update()
        if changed:
            self._publish_task()

    def _task_health(self) -> Health:
        st = self.task_status
        message = {"touched": "cube touched", "timeout": "episode timed out"}.get(st.state, "reaching")
        return Health(f"{self.get_name()}: task", 0, f"episode {st.episode}: {message}", st.values())

    def _publish_task(self) -> None:
        self.task_pub.publish(status_msg(self._task_health()))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.task_status = self.episodes.reset()
        self._publish_task()
        response.success = True
        response.message = f"episode {self.task_status.episode} (seed {self.task_status.seed})"
        return response

    def _render(self) -> None:
        try:
            self.streams.publish(self.camera.read(), self.camera)
        except RobotStackError as exc:
            self.streams.monitor.dropped("capture", str(exc))

    def _diagnostics(self) -> None:
        now = time.monotonic_ns()
        name = self.get_name()
        stats = self.world.stats
        tcp = self.world.tcp_pose().translation
        dist = float(np.linalg.norm(tcp - self.world.cube_top_center()))
        world = Health(
            f"{name}: world",
            0 if stats.skip_events == 0 else 1,
            "ok" if stats.skip_events == 0 else f"skipped {stats.skipped_s:.3f} s of simulation",
            (
                ("sim_time_s", f"{stats.sim_time_s:.3f}"),
                ("skipped_s", f"{stats.skipped_s:.3f}"),
                ("tcp_xyz", " ".join(f"{v:.4f}" for v in tcp)),
                ("tcp_to_cube_m", f"{dist:.4f}"),
                ("rejected_commands", str(self.robot.rejected)),
            ),
        )
        reports = [world, self._task_health(), self.states.health(name, now), self.commands.health(name, now)]
        if self.camera is not None:
            reports.append(self.streams.monitor.health(name, now))
        self.diag.publish(reports)

    def close(self) -> None:
        if self.camera is not None:
            self.camera.stop()


def main(args: list[str] | None = None) -> int:
    return run_node(SimBridgeNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
