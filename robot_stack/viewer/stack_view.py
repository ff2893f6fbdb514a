"""Feed a :class:`~robot_stack.viewer.live.LiveView` from a running cell: the demo's and HIL's policy cycles
(:class:`StackView`), recording and teleop loops (:class:`CellView`).

Per step: what the cameras saw (RGB and depth of each frame, or the policy's observation: RGB, depth recovered from
the base-frame XYZ — projected here from the depth and calibration when the policy takes the depth form — and the
point cloud), the measured and commanded joints and the measured TCP (the robot model is
posed by the measured joints), the trajectory handed to the executor (planned joints, TCP path), and events: a cycle
that failed or was refused (stale frames, transport, decode), a watchdog hold, new safety interventions.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from robot_stack.calibration.payload import xyz_from_depth
from robot_stack.cycle import CycleResult
from robot_stack.types import CameraModel, Frame, JointTrajectory, Observation, Pose, RobotState
from robot_stack.viewer.live import LiveView

__all__ = ["CellView", "StackView", "robot_model"]

log = logging.getLogger("robot_stack.viewer")


def robot_model(model: str) -> tuple[str, Any]:
    """(URDF text with absolute mesh paths, ``fk_xyz(q) -> (3,)``) of a registered robot description (``panda``,
    ``ur5``, ``so101``). Raises ConfigError for an unknown name."""
    from robot_stack.kinematics.ik import ik_for
    from robot_stack.robots.registry import get_embodiment

    embodiment = get_embodiment(model)
    return embodiment.urdf_text(), ik_for(embodiment).fk_xyz


class CellView:
    """Logs steps of a cell (robot + calibrated cameras) into ``view``.

    Logging (encoding images, forward kinematics of chunks) runs on a worker thread, never in the caller's loop:
    :meth:`step` queues the step's data and returns. When the worker falls behind (a loaded machine) the oldest
    queued step is dropped (counted in :attr:`dropped`, logged at close): the view may skip a cycle, the loop never
    waits for it.

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
        self.dropped = 0
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=4)
        self._worker = threading.Thread(target=self._work, name="robot_stack-viewer", daemon=True)
        self._worker.start()
        view.on_close(self.close)
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
        """One step at ``t_ns`` (monotonic ns of the data), logged by the worker."""
        self.step_index += 1
        step_index = self.step_index
        self._submit(lambda: self._log_step(t_ns, step_index, frames, observation, state, commanded, trajectory))

    def _log_step(
        self,
        t_ns: int,
        step_index: int,
        frames: Sequence[Frame],
        observation: Observation | None,
        state: RobotState | None,
        commanded: np.ndarray | None,
        trajectory: JointTrajectory | None,
    ) -> None:
        view = self.view
        view.at(t_ns, step_index)
        for frame in frames:
            view.log_frame(frame)
        if observation is not None:
            for cam in observation.cameras:
                xyz = cam.xyz_base
                if xyz is None and cam.depth is not None and cam.calib is not None:
                    # the depth form (a VLA projects in its own graph): the view projects it the same way
                    xyz = xyz_from_depth(cam.depth, cam.calib)
                if xyz is not None:
                    view.log_observation(cam.camera_id, cam.rgb, xyz)
        view.log_joints(
            measured=None if state is None else state.q,
            commanded=commanded,
            tcp_xyz=None if state is None else state.ee_pose.translation,
        )
        if trajectory is not None:
            view.log_plan(trajectory)

    def event(self, kind: str, text: str, level: str = "WARN", t_ns: int | None = None) -> None:
        step_index = self.step_index

        def log_it() -> None:
            if t_ns is not None:
                self.view.at(t_ns, step_index)
            self.view.log_event(kind, text, level)

        self._submit(log_it)

    def target(self, xyz: np.ndarray, t_ns: int | None = None) -> None:
        def log_it() -> None:
            if t_ns is not None:
                self.view.at(t_ns, self.step_index)
            self.view.log_target(xyz)

        self._submit(log_it)

    def joints(self, t_ns: int, measured: np.ndarray) -> None:
        """Measured joints alone (a joint-state stream faster than the steps)."""
        q = np.asarray(measured, np.float64).copy()

        def log_it() -> None:
            self.view.at(t_ns)
            self.view.log_joints(measured=q)

        self._submit(log_it)

    def plan(self, trajectory: JointTrajectory) -> None:
        """A trajectory alone (from a topic)."""

        def log_it() -> None:
            self.view.at(int(trajectory.t_ns[0]))
            self.view.log_plan(trajectory)

        self._submit(log_it)

    # ----------------------------------------------------------------------------------------------- worker
    def _submit(self, job: Callable[[], None]) -> None:
        while True:
            try:
                self._queue.put_nowait(job)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()  # the oldest step goes: the view is behind, the loop must not wait
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # the view must never take anything down
                log.debug("viewer step not logged", exc_info=True)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued step is logged (or ``timeout_s``)."""
        done = threading.Event()
        self._submit(done.set)
        done.wait(timeout_s)

    def close(self) -> None:
        """Log what is queued, stop the worker. Idempotent."""
        if self._worker.is_alive():
            self.flush()
            self._queue.put(None)
            self._worker.join(5.0)
            if self.dropped:
                log.info("viewer skipped %d steps it could not keep up with", self.dropped)


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
        if target_xyz is not None:
            self.target(np.asarray(target_xyz, np.float64).copy(), self.stack.clock.now_ns())

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
            self.event(result.outcome.split(":")[0], result.detail or result.outcome, t_ns=self.stack.clock.now_ns())
        if executor is not None:
            self._executor_events(executor)

    def _executor_events(self, executor: Any) -> None:
        try:
            stats = executor.stats()
        except Exception:
            return
        holds = int(stats.get("holds") or 0)
        safety = int((stats.get("safety") or {}).get("total", 0))
        now = self.stack.clock.now_ns()
        if holds > self._holds:
            self.event("hold", f"watchdog hold #{holds} (executor {executor.state.value})", "ERROR", now)
        if safety > self._safety:
            self.event("safety", f"{safety - self._safety} new safety intervention(s), {safety} in all", t_ns=now)
        self._holds, self._safety = holds, safety
