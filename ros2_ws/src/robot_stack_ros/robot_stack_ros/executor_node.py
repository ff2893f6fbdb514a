"""Executor node (managed): joint trajectories in, safe position commands out at control rate, with a watchdog.

Runs the core :class:`~robot_stack.control.executor.Executor` (absolute-deadline loop following motion plans
within the limits by construction, SafetyFilter as a monitor, watchdog → ruckig stop to a hold) behind the
:class:`~robot_stack.control.scheduler.ChunkScheduler` (latency compensation, TOPP-RA timing, ruckig splice /
ensemble / none), both built by the stack builder from ``stack_config`` (``robot_stack.stack.build_executor`` /
``build_scheduler``; the node's ``rate_hz``, ``watchdog_timeout_s`` and ``blend`` override it), on a robot whose
state comes from ``/joint_states`` and whose commands go to ros2_control:

* ``command_interface: forward_position`` → ``~/commands`` (``std_msgs/Float64MultiArray``, one set-point per tick;
  remap to ``/forward_position_controller/commands``);
* ``command_interface: joint_trajectory`` → ``~/joint_trajectory`` (one-point ``JointTrajectory`` per tick reaching
  the set-point ``jtc_lookahead_s`` ahead; remap to ``/joint_trajectory_controller/joint_trajectory``).

Input: ``~/trajectory`` (``trajectory_msgs/JointTrajectory`` from the policy client). A malformed, stale or
wrong-joint trajectory is logged, counted and never reaches the arm. ``~/state`` (``std_msgs/String``) says
idle / tracking / stopping / holding / stopped at 20 Hz; ``/diagnostics`` carries rates, lateness, holds,
rejections and safety interventions. Lifecycle: configure builds the executor, activate needs fresh joint states
(refused with the reason otherwise) and starts the loop, deactivate decelerates to a stop.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg

from robot_stack.clock import MonotonicClock
from robot_stack.control.executor import Executor
from robot_stack.control.scheduler import ChunkScheduler
from robot_stack.errors import ConfigError, RobotStackError, ShapeError
from robot_stack.graph.diagnostics import Health, StreamMonitor
from robot_stack.graph.streams import StreamedArm
from robot_stack_ros.common import (
    COMMAND_QOS,
    STATE_QOS,
    DiagnosticsPublisher,
    accepted_joint_state,
    autostart,
    declare,
    run_node,
    single_point_trajectory,
    trajectory_from_msg,
)

log = logging.getLogger("robot_stack.ros.executor")


class ExecutorNode(LifecycleNode):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__("executor")
        from robot_stack.robots.registry import get_embodiment

        self.rate_hz = declare(self, "rate_hz", 250.0, "control rate of the executor loop, Hz")
        self.watchdog_timeout_s = declare(
            self, "watchdog_timeout_s", 0.3, "no trajectory covering now for this long = safe hold, s"
        )
        self.interface = declare(
            self, "command_interface", "forward_position", "forward_position (Float64MultiArray) | joint_trajectory"
        )
        self.blend = declare(self, "blend", "splice", "chunk blending: splice | ensemble | none")
        self.stack_config = declare(
            self, "stack_config", "demo", "stack preset (robot_stack/configs) or YAML file: motion and safety settings"
        )
        self.max_state_age_s = declare(self, "max_state_age_s", 0.25, "joint states older than this are stale, s")
        self.jtc_lookahead_s = declare(
            self, "jtc_lookahead_s", 0.02, "joint_trajectory interface: time_from_start of each set-point, s"
        )
        self.autostart = declare(self, "autostart", True, "configure and activate at start-up")
        self.embodiment = get_embodiment(
            declare(self, "robot", "panda", "the arm: panda | ur5 | so101 (joints, limits)")
        )
        if self.interface not in ("forward_position", "joint_trajectory"):
            raise ConfigError(f"command_interface {self.interface!r}: expected forward_position or joint_trajectory")
        if self.blend not in ("splice", "ensemble", "none"):
            raise ConfigError(f"blend {self.blend!r}: expected splice, ensemble or none")
        self.names = self.embodiment.arm_joints
        self.limits = self.embodiment.limits
        self.diag = DiagnosticsPublisher(self)
        self.trajectories = StreamMonitor("trajectories", max_silence_s=max(1.0, 3 * self.watchdog_timeout_s))
        self.joint_states = StreamMonitor("joint_states", max_silence_s=self.max_state_age_s)
        self.commands = StreamMonitor("commands", expected_hz=self.rate_hz)
        if self.interface == "forward_position":
            self.cmd_pub = self.create_publisher(Float64MultiArray, "~/commands", COMMAND_QOS)
        else:
            self.cmd_pub = self.create_publisher(JointTrajectoryMsg, "~/joint_trajectory", COMMAND_QOS)
        self.state_pub = self.create_publisher(String, "~/state", 10)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, STATE_QOS)
        self.create_subscription(JointTrajectoryMsg, "~/trajectory", self._on_trajectory, COMMAND_QOS)
        self.arm: StreamedArm | None = None
        self.control: Executor | None = None
        self.scheduler: ChunkScheduler | None = None
        self._active = False
        self._last_refusal = ""
        self.create_timer(0.05, self._publish_state)
        self.create_timer(1.0, self._publish_diagnostics)
        autostart(self, self.autostart)

    # ---------------------------------------------------------------------------------------- lifecycle
    def _lifecycle_state(self) -> str:
        return str(self._state_machine.current_state[1])

    def _send(self, q: np.ndarray, gripper: float | None) -> None:
        if self.interface == "forward_position":
            self.cmd_pub.publish(Float64MultiArray(data=[float(x) for x in q]))
        else:
            lookahead = int(self.jtc_lookahead_s * 1e9)
            self.cmd_pub.publish(single_point_trajectory(self.names, q, lookahead, time.monotonic_ns()))
        self.commands.received(time.monotonic_ns())

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from robot_stack.kinematics.ik import ik_for
        from robot_stack.stack import build_executor, build_scheduler, load_stack_config

        try:
            ik = ik_for(self.embodiment)
            self.arm = StreamedArm(self.names, self.limits, ik.fk, self._send, self.max_state_age_s)
            clock = MonotonicClock()
            # the stack builder's executor and scheduler: chunks timed within the limits (TOPP-RA), every
            # transition a ruckig join from the plan's state (no blend window to set); the node's parameters
            # override the preset's control section. The loop runs in this node's process (its commands go out
            # through this node's publisher).
            config = load_stack_config(
                self.stack_config,
                [
                    f"robot.model={self.embodiment.name}",
                    f"control.rate_hz={self.rate_hz}",
                    f"control.watchdog_s={self.watchdog_timeout_s}",
                    f"control.blend={self.blend}",
                    "control.executor=thread",
                ],
            )
            self.control = build_executor(config, self.arm, clock)
            self.scheduler = build_scheduler(config, self.control)
        except RobotStackError as exc:
            log.error("executor configure failed: %s", exc)
            return TransitionCallbackReturn.FAILURE
        log.info("executor configured: %.0f Hz, %s, blend %s", self.rate_hz, self.interface, self.blend)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.arm is not None and self.control is not None
        problem = self.arm.state_problem(time.monotonic_ns())
        if problem is not None:
            if problem != self._last_refusal:
                log.warning("not activating: %s", problem)
                self._last_refusal = problem
            return TransitionCallbackReturn.FAILURE
        self.control.start()
        self._active = True
        log.info("executor active: holding the current position until a trajectory arrives")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        if self.control is not None:
            self.control.stop()
        return super().on_deactivate(state)

    def close(self) -> None:
        self._active = False
        if self.control is not None:
            self.control.stop()

    # ----------------------------------------------------------------------------------------- callbacks
    def _on_joint_state(self, msg: JointState) -> None:
        state = accepted_joint_state(msg, self.names, self.joint_states, self.max_state_age_s)
        if state is not None and self.arm is not None:
            self.arm.update(*state)

    def _on_trajectory(self, msg: JointTrajectoryMsg) -> None:
        if not self._active or self.control is None:
            self.trajectories.dropped("inactive", "executor is not active")
            return
        try:
            traj = trajectory_from_msg(msg, self.names)
        except ShapeError as exc:
            self.trajectories.dropped("malformed", str(exc))
            log.error("trajectory rejected: %s", exc)
            return
        if self.scheduler is not None:
            result = self.scheduler.submit(traj)
            accepted, why = result.accepted, result.reason
        else:  # pragma: no cover - configure always builds one
            accepted, why = self.control.set_trajectory(traj), "executor refused it"
        now = time.monotonic_ns()
        if accepted:
            self.trajectories.received(now, (now - int(traj.t_ns[0])) / 1e9)
        else:
            self.trajectories.dropped("refused", why)

    def _publish_state(self) -> None:
        state = self.control.state.value if self.control is not None else "unconfigured"
        self.state_pub.publish(String(data=state))

    def _publish_diagnostics(self) -> None:
        now = time.monotonic_ns()
        name = self.get_name()
        reports = [self.trajectories.health(name, now), self.joint_states.health(name, now)]
        if self.control is not None:
            s = self.control.stats()
            keys = ("state", "ticks", "achieved_rate_hz", "skipped_ticks", "holds", "lateness_p99_ms", "command_errors")
            values = tuple((k, str(s[k])) for k in keys if k in s)
            values += (("rejected", str(s["trajectories_rejected"])), ("safety", str(s["safety"])))
            level = 0 if s["state"] in ("tracking", "idle") else 1
            msg = {"holding": "watchdog hold: no trajectory covers now", "stopping": "decelerating"}.get(
                s["state"], s["state"]
            )
            reports.append(Health(f"{name}: executor", level, msg, values))
            reports.append(self.commands.health(name, now))
        else:
            reports.append(Health(f"{name}: executor", 1, self._lifecycle_state(), ()))
        self.diag.publish(reports)


def main(args: list[str] | None = None) -> int:
    return run_node(ExecutorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
