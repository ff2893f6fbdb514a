"""Feed a :class:`~robot_stack.viewer.live.LiveView` from a running cell: the demo's and HIL's policy cycles
(:class:`StackView`), recording and teleop loops (:class:`CellView`).

Per step: what the cameras saw (RGB and depth of each frame, or the policy's observation: RGB, depth recovered from
the base-frame XYZ, and the point cloud), the measured and commanded joints and the measured TCP (the robot model is
posed by the measured joints), the trajectory handed to the executor (planned joints, TCP path), and events: a cycle
that failed or was refused (stale frames, transport, decode), a watchdog hold, new safety interventions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from robot_stack.cycle import CycleResult
from robot_stack.types import CameraModel, Frame, JointTrajectory, Observation, Pose, RobotState
from robot_stack.viewer.live import LiveView

__all__ = ["CellView", "StackView", "robot_model"]

log = logging.getLogger("robot_stack.viewer")


def robot_model(model: str) -> tuple[str, Any]:
    """(URDF text with absolute mesh paths, ``fk_xyz(q) -> (3,)``) of a robot description (``panda``)."""
    if model != "panda":
        raise ValueError(f"no viewer model for robot {model!r}")
    from robot_stack.kinematics.ik import panda_ik
    from robot_stack.robots import panda

    return panda.urdf_text_with_absolute_paths(), panda_ik().fk_xyz


class CellView:
    """Logs steps of a cell (robot + calibrated cameras) into ``view``.

    Args:
        view: the live view.
        robot: robot description name (``panda``).
        joint_names: the arm's joints, in the robot's order.
        cameras: ``(camera_id, intrinsics, T_base_cam)`` of each camera.
    """

    def __init__(
        self,
        view: LiveView,
        robot: str,
        joint_names: Sequence[str],
        cameras: Iterable[tuple[str, CameraModel, Pose]],
    ) -> None:
        self.view = view
        self.step_index = 0
        urdf, fk = robot_model(robot)
        view.log_robot(urdf, joint_names, fk)
        ids = []
        for camera_id, model, T_base_cam in cameras:
            view.log_camera(camera_id, model, T_base_cam)
            ids.append(camera_id)
        view.send_layout(ids)

    def step(
        self,
        t_ns: int,
        *,
        frames: Sequence[Frame] = (),
        observation: Observation | None = None,
        state: RobotState | None = None,
        commanded: np.ndarray | None = None,
        trajectory: JointTrajectory | None = None,
    ) -> None:
        """One step at ``t_ns`` (monotonic ns of the data)."""
        view = self.view
        self.step_index += 1
        view.at(t_ns, self.step_index)
        for frame in frames:
            view.log_frame(frame)
        if observation is not None:
            for cam in observation.cameras:
                view.log_observation(cam.camera_id, cam.rgb, cam.xyz_base)
        view.log_joints(
            measured=None if state is None else state.q,
            commanded=commanded,
            tcp_xyz=None if state is None else state.ee_pose.translation,
        )
        if trajectory is not None:
            view.log_plan(trajectory)

    def event(self, kind: str, text: str, level: str = "WARN") -> None:
        self.view.log_event(kind, text, level)

    def target(self, xyz: np.ndarray) -> None:
        self.view.log_target(xyz)


class StackView(CellView):
    """A :class:`CellView` of a built :class:`~robot_stack.stack.build.Stack`, fed from its policy cycles
    (``after_cycle`` of :func:`~robot_stack.stack.run_live_episode`) with the episode's executor events."""

    def __init__(self, view: LiveView, stack: Any) -> None:
        super().__init__(
            view,
            stack.config.robot.model,
            stack.robot.joint_names,
            [
                (str(getattr(camera, "camera_id", "camera")), projector.camera, projector.T_base_cam)
                for camera, projector in stack.cameras
            ],
        )
        self.stack = stack
        self._episode: Any = None
        self._holds = 0
        self._safety = 0

    def start_episode(self, episode: Any, target_xyz: np.ndarray | None = None) -> None:
        """A new episode (its executor and cycle); ``target_xyz``: the task's target, base frame."""
        self._episode = episode
        self._holds = self._safety = 0
        self.view.at(self.stack.clock.now_ns(), self.step_index)
        if target_xyz is not None:
            self.target(target_xyz)

    def after_cycle(self, step: int, result: CycleResult) -> None:
        """Log one cycle (call after every cycle)."""
        try:
            state = self.stack.robot.read_state()
        except Exception as exc:  # the robot's own error is the loop's business
            log.debug("viewer: no robot state: %s", exc)
            state = None
        executor = self._episode.executor if self._episode is not None else None
        commanded = executor.commanded if executor is not None else None
        self.step(
            self.stack.clock.now_ns(),
            observation=result.observation,
            state=state,
            commanded=None if commanded is None else commanded[0],
            trajectory=result.trajectory,
        )
        if not result.ok and result.outcome != "recovering":
            self.event(result.outcome.split(":")[0], result.detail or result.outcome)
        if executor is not None:
            self._executor_events(executor)

    def _executor_events(self, executor: Any) -> None:
        try:
            stats = executor.stats()
        except Exception:
            return
        holds = int(stats.get("holds") or 0)
        safety = int((stats.get("safety") or {}).get("total", 0))
        if holds > self._holds:
            self.event("hold", f"watchdog hold #{holds} (executor {executor.state.value})", "ERROR")
        if safety > self._safety:
            self.event("safety", f"{safety - self._safety} new safety intervention(s), {safety} in all")
        self._holds, self._safety = holds, safety
