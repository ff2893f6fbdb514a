"""Recording teleoperated episodes in the simulated cell (two RGB-D cameras, 500 Hz executor).

:class:`SimRecordingRig` is the :class:`~robot_stack.stack.lockstep.LockstepRig` (fake clock, deterministic, as fast
as the machine renders) with a second camera and taps that feed a :class:`~robot_stack.dataset.recorder.Recorder`:

* every policy step (``1 / fps``): all cameras render, the robot state is read, the teleop device returns a chunk,
  :class:`~robot_stack.teleop.base.TeleopDecoder` decodes it (IK) and the frame is recorded with the command;
* every executor tick (500 Hz): the safety-filtered set-point the robot receives and the measured joints go to the
  control-rate stream (the robot is wrapped by :class:`RecordingRobot`).

Live mode (:func:`run_live_session`) runs the same pieces on the monotonic clock: the executor in its own 500 Hz
thread, a loop at ``fps`` that observes, asks the device, decodes and records, and episode keys from a
:class:`~robot_stack.teleop.keys.KeySource`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.calibration.store import CameraCalibration, load_calibration
from robot_stack.clock import Clock, MonotonicClock
from robot_stack.cycle import observation_from
from robot_stack.dataset.format import CameraStream, DatasetSpec
from robot_stack.dataset.recorder import Recorder
from robot_stack.dataset.writer import CommittedEpisode, FrameRow, JointSample, calibration_at
from robot_stack.errors import DatasetError, RobotStackError
from robot_stack.robots.base import JointLimits, Robot
from robot_stack.robots.registry import get_embodiment
from robot_stack.sim.camera import DEPTH_SCALE
from robot_stack.sim.task import ReachTouchTask
from robot_stack.sim.world import SimWorld
from robot_stack.stack.build import build_cell, build_executor
from robot_stack.stack.config import CameraConfig, StackConfig, load_stack_config
from robot_stack.stack.lockstep import EpisodeResult, LockstepRig
from robot_stack.teleop.base import TeleopDecoder, TeleopDevice
from robot_stack.teleop.keyboard import KeyboardJog
from robot_stack.teleop.keys import KeyEvent, KeySource, episode_event
from robot_stack.types import ActionChunk, Frame, JointTrajectory, Observation, Pose, RobotState

log = logging.getLogger("robot_stack.teleop.sim")

__all__ = [
    "ENV_STATE_NAMES",
    "TARGET_STATE_NAMES",
    "RecordingRobot",
    "SimRecordingRig",
    "recording_stack_config",
    "sim_dataset_spec",
]

#: ``observation.environment_state`` of simulated datasets: the cube's top-centre, metres, base frame (tabletop
#: recordings: the instruction's target point, :data:`TARGET_STATE_NAMES`).
ENV_STATE_NAMES = ("cube_top_x", "cube_top_y", "cube_top_z")
TARGET_STATE_NAMES = ("target_x", "target_y", "target_z")


def recording_stack_config(
    cameras: Sequence[str] = ("front", "side"),
    width: int = 640,
    height: int = 480,
    max_duration_s: float = 8.0,
    rate_hz: float | None = None,
    scene: str | None = None,
    base: StackConfig | None = None,
    robot: str = "panda",
    instruction: str = "",
) -> StackConfig:
    """The stack a simulated recording session runs: the ``demo`` preset (or ``base``) for arm ``robot`` with the
    recorded cameras at the recorded size, the control rate (None: the arm's), the calibration scene (None: the
    arm's cell) and the episode limit; with an ``instruction`` (of the tabletop suite) the cell has the suite's
    objects and the task is that instruction."""
    config = base or load_stack_config("demo", robot=robot)
    overrides = [f"task.max_duration_s={max_duration_s}"]
    if scene is not None:
        overrides.append(f"calibration.scene={scene}")
    if rate_hz is not None:
        overrides.append(f"control.rate_hz={rate_hz}")
    if instruction:
        overrides += ["task.suite=tabletop", f"task.instruction={instruction}"]
    config = config.with_overrides(overrides)
    return config.replace(
        cameras=tuple(CameraConfig(camera_id=c, kind="sim", width=width, height=height) for c in cameras)
    )


def sim_dataset_spec(
    cameras: Sequence[str] = ("front", "side"),
    fps: int = 10,
    width: int = 640,
    height: int = 480,
    robot: str = "panda",
    control_rate_hz: float | None = None,
    env_state_names: tuple[str, ...] = ENV_STATE_NAMES,
) -> DatasetSpec:
    """Layout of datasets recorded in the simulated cell of arm ``robot`` (its joints; the cube's top centre, or the
    instruction's target point, as environment state; the control-rate stream at ``control_rate_hz``, None = the
    arm's rate)."""
    emb = get_embodiment(robot)
    return DatasetSpec(
        fps=fps,
        cameras=tuple(CameraStream(c, width, height) for c in cameras),
        joint_names=emb.arm_joints,
        robot_type=emb.name,
        control_rate_hz=float(control_rate_hz or emb.control_rate_hz),
        env_state_names=env_state_names,
        depth_scale=DEPTH_SCALE,
    )


class RecordingRobot(Robot):
    """A :class:`Robot` proxy that reports every set-point it forwards (with the measured state) to a callback.

    Args:
        inner: the robot to command.
        on_command: called after each ``command`` with a :class:`~robot_stack.dataset.writer.JointSample`.
        measure: returns (t_ns, q, dq, gripper) of the robot now without stepping it (default: ``read_state``).
    """

    def __init__(
        self,
        inner: Robot,
        on_command: Callable[[JointSample], object] | None = None,
        measure: Callable[[], tuple[int, np.ndarray, np.ndarray, float]] | None = None,
    ) -> None:
        self.inner = inner
        self.on_command = on_command
        self._measure = measure

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.inner.joint_names

    @property
    def limits(self) -> JointLimits:
        return self.inner.limits

    def read_state(self) -> RobotState:
        return self.inner.read_state()

    def command(self, q: np.ndarray, gripper: float | None = None) -> None:
        self.inner.command(q, gripper)
        if self.on_command is not None:
            if self._measure is not None:
                t, qm, dqm, g = self._measure()
            else:
                st = self.inner.read_state()
                t, qm, dqm, g = st.t_ns, st.q, st.dq, st.gripper
            self.on_command(
                JointSample(t, qm, dqm, np.asarray(q, np.float64), g, float("nan") if gripper is None else gripper)
            )


def _world_measure(world: SimWorld) -> Callable[[], tuple[int, np.ndarray, np.ndarray, float]]:
    def measure() -> tuple[int, np.ndarray, np.ndarray, float]:
        with world.lock:
            return world.synced_ns, world.arm_q(), world.arm_dq(), world.gripper_opening()

    return measure


def _frame_row(
    chunk: ActionChunk,
    state: RobotState,
    traj: JointTrajectory | None,
    frames: Sequence[Frame],
    env_state: np.ndarray | None,
    fk: Callable[[np.ndarray], Pose],
    tool_down: np.ndarray,
) -> FrameRow:
    """The recorded command of one step: step 1 of the decoded chunk (the next target), or a hold if undecodable."""
    k = 1 if chunk.horizon > 1 else 0
    gripper = float(chunk.gripper[k]) if chunk.gripper is not None else float(state.gripper)
    if traj is None:
        q_target, ee_target = state.q, state.ee_pose
    else:
        # the decoded row meant for step k's time (a decoder may drop unreachable steps)
        t_k = int(chunk.step_times_ns()[k])
        row = min(int(np.searchsorted(traj.t_ns, t_k)), traj.positions.shape[0] - 1)
        q_target = traj.positions[row]
        if chunk.action_space == "ee_delta_xyz":
            ee_target = Pose(tool_down, state.ee_pose.translation + chunk.actions[k], "base", "tcp")
        else:
            ee_target = fk(q_target)
    return FrameRow(
        state.t_ns, tuple(int(f.t_capture_ns) for f in frames), state, q_target, gripper, ee_target, env_state
    )


class SimRecordingRig(LockstepRig):
    """:class:`LockstepRig` with several cameras and recording taps (see module doc).

    Args:
        cameras: camera ids of the simulated cell to render and record (``front``, ``side``).
        fps: frames (and device commands) per simulated second.
        width, height: image size, pixels.
        max_duration_s: episode time limit, simulated seconds.
        rate_hz: executor rate (None: the arm's).
        scene: calibration scene of the cameras (None: the arm's cell).
        robot: the arm (``panda`` | ``ur5`` | ``so101``).
        instruction: an instruction of the tabletop suite ("" = the reach task): the cell gets the suite's objects,
            the episodes are stored with this instruction, the environment state is its target point.
    """

    def __init__(
        self,
        cameras: Sequence[str] = ("front", "side"),
        fps: int = 10,
        width: int = 640,
        height: int = 480,
        max_duration_s: float = 8.0,
        rate_hz: float | None = None,
        scene: str | None = None,
        robot: str = "panda",
        instruction: str = "",
    ) -> None:
        self.recorder: Recorder | None = None

        def tap(robot: Robot) -> Robot:
            return RecordingRobot(robot, self._on_command, _world_measure(robot.world))  # type: ignore[attr-defined]

        super().__init__(
            recording_stack_config(
                cameras, width, height, max_duration_s, rate_hz, scene, robot=robot, instruction=instruction
            ),
            policy_period_s=1.0 / fps,
            max_duration_s=None,
            robot_wrapper=tap,
        )
        scene = self.config.calibration.scene
        env_names = TARGET_STATE_NAMES if instruction else ENV_STATE_NAMES
        self.spec = sim_dataset_spec(cameras, fps, width, height, robot, self.rate_hz, env_names)
        self.cameras = {camera.camera_id: camera for camera, _ in self.cell.cameras}
        self.calibrations: dict[str, CameraCalibration] = {
            c: calibration_at(load_calibration(scene, c), width, height) for c in cameras
        }
        self.decoder = TeleopDecoder(robot=robot)
        #: a :class:`~robot_stack.viewer.stack_view.CellView` shown every recorded step (``--display``/``--save``)
        self.view: Any = None
        self._frames: list[Frame] = []
        self._pending: tuple[ActionChunk, Observation] | None = None
        self._env_at_obs: np.ndarray | None = None

    def _on_command(self, sample: JointSample) -> None:
        if self.recorder is not None:
            self.recorder.add_joint_sample(sample)

    def observe(self) -> Observation:
        """Render every camera, read the state; the observation carries the first camera's base-frame XYZ."""
        self._flush_pending()
        self._frames = [cam.read() for cam in self.cameras.values()]
        state = self.robot.read_state()
        return observation_from(self._frames, (self.projector.observe(self._frames[0]),), state, self.task.instruction)

    def _flush_pending(self) -> None:
        """Record the frame of the previous step with what its command decoded to."""
        if self._pending is None or self.recorder is None:
            self._pending = None
            return
        chunk, obs = self._pending
        self._pending = None
        last = self.decoder.last
        traj = last[2] if last is not None and last[0] is chunk else None
        env = self._env_state() if self._env_at_obs is None else self._env_at_obs
        ee = self.decoder.decoders["ee_delta_xyz"]
        row = _frame_row(chunk, obs.state, traj, self._frames, env, ee.ik.fk, self.config.embodiment.tool_down)
        self.recorder.add_frame(row, self._frames)
        if self.view is not None:
            self.view.step(obs.state.t_ns, frames=self._frames, state=obs.state, trajectory=traj)

    def _env_state(self) -> np.ndarray:
        """The environment state now: the cube's top centre, or the tabletop instruction's target point (metres)."""
        if isinstance(self.task, ReachTouchTask):
            return np.asarray(self.task.cube_top_center(), np.float32)
        return np.asarray(self.task.expert_goal()[1], np.float32)

    def _on_step(self, obs: Observation, chunk: ActionChunk) -> None:
        self._pending = (chunk, obs)
        self._env_at_obs = self._env_state()

    def record_episode(
        self, recorder: Recorder, device: TeleopDevice, seed: int, extra: dict | None = None
    ) -> tuple[EpisodeResult, CommittedEpisode]:
        """Run one lockstep episode driven by ``device`` and commit it (success label from the task)."""
        self.recorder = recorder
        self._env_at_obs = None
        device.reset()
        recorder.start_episode(
            self.task.instruction,
            {"seed": seed, "teleop": device.name, "sim": True, "mode": "lockstep", **(extra or {})},
        )
        try:
            result = self.run_episode(device, seed, on_step=self._on_step)
            self._flush_pending()
        except BaseException:
            self._pending = None
            recorder.discard()
            raise
        finally:
            self.recorder = None
        committed = recorder.stop_episode(
            result.success,
            {
                "duration_s": result.duration_s,
                "final_distance_m": result.final_distance_m,
                "time_to_success_s": self.task.time_to_success_s,
                "executor_rate_hz": self.rate_hz,
            },
        )
        return result, committed


@dataclass(frozen=True)
class LiveSessionReport:
    """What a live session did: committed episodes, discarded count, frames dropped, keys handled."""

    committed: tuple[CommittedEpisode, ...]
    discarded: int
    events: tuple[str, ...]


def run_live_session(
    rig_cameras: Sequence[str],
    recorder: Recorder,
    device: TeleopDevice,
    keys: KeySource,
    fps: int = 10,
    width: int = 640,
    height: int = 480,
    max_episodes: int | None = None,
    clock: Clock | None = None,
    seed: int = 0,
    idle_timeout_s: float | None = None,
    view: Any = None,
    robot: str = "panda",
) -> LiveSessionReport:
    """Real-time teleop recording in the simulated cell, driven by episode keys (see :mod:`robot_stack.teleop.keys`).

    The executor runs in its own 500 Hz thread on the monotonic clock; this loop runs at ``fps``: poll keys, observe,
    ask ``device``, decode (IK) and hand the trajectory to the executor, record the frame while an episode is open.
    ``idle_timeout_s``: return after this long without a key (None = wait for ``q``). ``view``: a
    :class:`~robot_stack.viewer.live.LiveView` that shows every step live (the cameras, the arm, the commands).
    """
    clock = clock or MonotonicClock()
    arm = robot  # ``robot`` names the connected Robot below
    config = recording_stack_config(rig_cameras, width, height, max_duration_s=1e9, robot=arm)

    def tap(robot: Robot) -> Robot:
        return RecordingRobot(robot, recorder.add_joint_sample, _world_measure(robot.world))  # type: ignore[attr-defined]

    cell = build_cell(config, clock, robot_wrapper=tap)
    robot, world = cell.robot, cell.world
    task = ReachTouchTask(world, max_duration_s=1e9)
    cams = {camera.camera_id: camera for camera, _ in cell.cameras}
    shown = None
    if view is not None:
        from robot_stack.viewer.stack_view import CellView

        shown = CellView(
            view,
            config.robot.model,
            robot.joint_names,
            [(c.camera_id, p.camera, p.T_base_cam) for c, p in cell.cameras],
        )
    decoder = TeleopDecoder(robot=arm)
    fk = decoder.decoders["ee_delta_xyz"].ik.fk
    tool_down = config.embodiment.tool_down
    executor = build_executor(config, robot, clock)
    executor.start()
    committed: list[CommittedEpisode] = []
    events: list[str] = []
    discarded = 0
    period_ns = round(1e9 / fps)
    next_t = clock.now_ns()
    last_key = time.monotonic()
    episode_seed = seed
    device.start()
    keys.start()
    try:
        while True:
            typed = keys.poll()
            if typed:
                last_key = time.monotonic()
            jog = []
            quit_ = False
            for key in typed:
                ev = episode_event(key)
                if ev is None:
                    jog.append(key)
                    continue
                events.append(ev.value)
                if ev in (KeyEvent.START, KeyEvent.REDO):
                    if ev is KeyEvent.REDO and recorder.discard():
                        discarded += 1
                    if not recorder.recording:
                        task.reset(episode_seed)
                        executor.stop()
                        executor = build_executor(config, robot, clock)
                        executor.start()
                        device.reset()
                        recorder.start_episode(
                            task.instruction, {"seed": episode_seed, "teleop": device.name, "sim": True, "mode": "live"}
                        )
                        episode_seed += 1
                elif ev in (KeyEvent.STOP_SUCCESS, KeyEvent.STOP_FAILURE) and recorder.recording:
                    try:
                        committed.append(recorder.stop_episode(ev is KeyEvent.STOP_SUCCESS))
                    except DatasetError as exc:  # e.g. stopped before any frame: nothing to keep
                        log.warning("episode not committed: %s", exc)
                        discarded += 1
                elif ev is KeyEvent.DISCARD and recorder.discard():
                    discarded += 1
                elif ev is KeyEvent.QUIT:
                    quit_ = True
            if quit_ or (idle_timeout_s is not None and time.monotonic() - last_key > idle_timeout_s):
                break
            if max_episodes is not None and len(committed) >= max_episodes:
                break
            if jog and isinstance(device, KeyboardJog) and device.keys in (keys, None):
                device.press(jog)  # one reader of the terminal: jog keys are handed to the device
            frames = [cam.read() for cam in cams.values()]
            state = robot.read_state()
            obs = observation_from(frames, (), state, task.instruction)
            chunk = device(obs)
            traj = None
            try:
                traj = decoder.decode(chunk, state)
                executor.set_trajectory(traj)
            except RobotStackError as exc:
                log.warning("teleop command rejected: %s", exc)
            if recorder.recording:
                env = np.asarray(task.cube_top_center(), np.float32)
                recorder.add_frame(_frame_row(chunk, state, traj, frames, env, fk, tool_down), frames)
            if shown is not None:
                commanded = executor.commanded
                shown.step(
                    state.t_ns,
                    frames=frames,
                    state=state,
                    commanded=None if commanded is None else commanded[0],
                    trajectory=traj,
                )
            next_t += period_ns
            clock.sleep_until(next_t)
    finally:
        if recorder.recording:
            recorder.discard()
            discarded += 1
        executor.stop()
        device.stop()
        keys.stop()
        cell.close()
    return LiveSessionReport(tuple(committed), discarded, tuple(events))
