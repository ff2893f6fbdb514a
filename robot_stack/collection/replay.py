"""Replay a recorded episode on the simulated cell (or a robot) and measure how well it tracks the recording.

Two sources of commands:

* ``"highrate"`` (default): the control-rate set-points the robot received during recording (``highrate/`` ``q_cmd``,
  already safety-filtered), sent at their recorded times. In the simulator, with the episode's seed, this
  reproduces the recording (tracking error ~0 shows the data is complete and consistent).
* ``"actions"``: the per-frame commanded joint targets (``action`` ``q_target``) as a trajectory through the
  :class:`~robot_stack.control.executor.Executor` (safety filter, 500 Hz) — what a policy trained on the data would
  command.

Tracking error: joint RMS (rad) and TCP position error (mm) between the replayed and the recorded measured state at
the frame times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from robot_stack.clock import Clock, FakeClock
from robot_stack.control.executor import Executor
from robot_stack.dataset.loader import Episode, HighRateStream
from robot_stack.errors import DatasetError
from robot_stack.robots.base import Robot
from robot_stack.types import JointTrajectory

log = logging.getLogger("robot_stack.dataset.replay")

__all__ = ["ReplayResult", "replay_in_sim", "replay_on_robot"]


@dataclass(frozen=True)
class ReplayResult:
    """Tracking of a replay against the recording.

    Attributes:
        episode_index: the replayed episode.
        source: ``"highrate"`` or ``"actions"``.
        joint_rms_rad: RMS over frames and joints of replayed - recorded joint positions, rad.
        joint_max_rad: largest absolute joint difference, rad.
        tcp_rms_mm, tcp_max_mm: TCP position difference (replayed vs recorded ``observation.ee_pose``), mm.
        q_replayed: (T, n) float64 replayed joint positions at the frame times, rad.
        tcp_replayed: (T, 3) float64 replayed TCP positions, m, base frame.
        success: whether the replayed episode solved the task (simulator only; False on a robot).
    """

    episode_index: int
    source: str
    joint_rms_rad: float
    joint_max_rad: float
    tcp_rms_mm: float
    tcp_max_mm: float
    q_replayed: np.ndarray
    tcp_replayed: np.ndarray
    success: bool

    @classmethod
    def measure(
        cls, episode: Episode, source: str, q_replayed: np.ndarray, tcp_replayed: np.ndarray, success: bool
    ) -> ReplayResult:
        """The tracking of a replay: ``q_replayed`` (T, n) rad and ``tcp_replayed`` (T, 3) m, sampled at the frame
        times, against the episode's recorded ``q`` and ``ee_pose`` translation."""
        dq = q_replayed - np.asarray(episode.q, np.float64)
        dp = np.linalg.norm(tcp_replayed - np.asarray(episode.ee_pose[:, :3], np.float64), axis=1) * 1e3
        return cls(
            episode.index,
            source,
            float(np.sqrt(np.mean(dq**2))),
            float(np.abs(dq).max()),
            float(np.sqrt(np.mean(dp**2))),
            float(dp.max()),
            q_replayed,
            tcp_replayed,
            success,
        )

    def summary(self) -> dict[str, float | int | str | bool]:
        return {
            "episode": self.episode_index,
            "source": self.source,
            "joint_rms_rad": round(self.joint_rms_rad, 6),
            "joint_max_rad": round(self.joint_max_rad, 6),
            "tcp_rms_mm": round(self.tcp_rms_mm, 3),
            "tcp_max_mm": round(self.tcp_max_mm, 3),
            "success": self.success,
        }


def replay_in_sim(episode: Episode, source: str = "highrate", rate_hz: float = 500.0) -> ReplayResult:
    """Drive a fresh simulated cell (cube placed by the episode's seed) from the episode's recorded commands.

    Raises:
        DatasetError: unknown ``source``, or the episode lacks what the source needs (seed, control-rate stream).
    """
    from robot_stack.sim.robot import SimRobot
    from robot_stack.sim.task import ReachTouchTask
    from robot_stack.sim.world import SimWorld

    if source not in ("highrate", "actions"):
        raise DatasetError(f"replay source must be 'highrate' or 'actions', got {source!r}")
    seed = episode.meta.get("seed")
    if seed is None:
        raise DatasetError(f"episode {episode.index} has no recorded seed; it was not recorded in the simulator")
    clock = FakeClock(start_ns=int(episode.t_ns[0]))
    world = SimWorld(clock=clock)
    task = ReachTouchTask(world, max_duration_s=1e9)
    task.reset(int(seed))
    n = len(episode.robot.joint_names)
    q0 = np.asarray(episode.state[0, :n], np.float64)
    world.set_arm_q(q0, float(episode.state[0, n]))
    robot = SimRobot(world)
    frame_t = episode.t_ns.astype(np.int64)
    q_rep = np.empty((episode.length, n))
    tcp_rep = np.empty((episode.length, 3))

    def sample(k: int) -> None:
        world.sync(int(frame_t[k]))
        q_rep[k] = world.arm_q()
        tcp_rep[k] = world.tcp_pose().translation
        task.is_success()

    k = 0
    if source == "highrate":
        hr = _highrate(episode)
        for t, q, g in zip(hr.t_ns, hr.q_cmd, hr.gripper_cmd, strict=True):
            while k < episode.length and frame_t[k] <= t:
                clock.sleep_until(int(frame_t[k]))
                sample(k)
                k += 1
            clock.sleep_until(int(t))
            robot.command(q, None if np.isnan(g) else float(g))
    else:
        executor = Executor(robot, clock, rate_hz=rate_hz)
        dt_ns = executor.period_ns
        traj = JointTrajectory(
            episode.robot.joint_names,
            frame_t + round(1e9 / episode.fps),
            np.asarray(episode.q_target, np.float64),
            np.clip(np.asarray(episode.action[:, n], np.float64), 0.0, 1.0),
        )
        executor.set_trajectory(traj)
        t = int(frame_t[0])
        while k < episode.length:
            while k < episode.length and frame_t[k] <= t:
                sample(k)
                k += 1
            t += dt_ns
            clock.sleep_until(t)
            executor.tick(t)
    while k < episode.length:
        clock.sleep_until(int(frame_t[k]))
        sample(k)
        k += 1
    if source == "actions":  # let the last frame's command play out (it targets one frame period later)
        t_end = int(frame_t[-1]) + round(1e9 / episode.fps)
        while t < t_end:
            t += dt_ns
            clock.sleep_until(t)
            executor.tick(t)
    task.is_success()
    return ReplayResult.measure(episode, source, q_rep, tcp_rep, bool(task.is_success()))


def replay_on_robot(
    episode: Episode,
    robot: Robot,
    clock: Clock | None = None,
    start_tolerance_rad: float = 0.05,
) -> ReplayResult:
    """Stream the episode's control-rate set-points to ``robot`` at their recorded relative times (absolute
    deadlines on ``clock``), through a :class:`~robot_stack.control.safety.SafetyFilter` with the robot's limits,
    and measure tracking against the recorded states at the frame times.

    The robot must already stand at the episode's first recorded joint positions (within
    ``start_tolerance_rad``): replay never makes an unplanned move to get there.

    Raises:
        DatasetError: no control-rate stream, or the robot is not at the start pose (the message says how far).
    """
    from robot_stack.clock import MonotonicClock
    from robot_stack.control.safety import SafetyFilter

    clock = clock or MonotonicClock()
    hr = _highrate(episode)
    n = len(episode.robot.joint_names)
    st = robot.read_state()
    gap = float(np.max(np.abs(st.q - np.asarray(episode.state[0, :n], np.float64))))
    if gap > start_tolerance_rad:
        raise DatasetError(
            f"robot is {gap:.3f} rad from the episode's start pose (tolerance {start_tolerance_rad}); move it to "
            f"{np.round(episode.state[0, :n], 4).tolist()} first"
        )
    safety = SafetyFilter(robot.limits)
    safety.set_period(float(np.median(np.diff(hr.t_ns))) / 1e9 if hr.t_ns.size > 1 else 0.002)
    safety.reset(st.q, st.dq)
    t0_rec = int(episode.t_ns[0])
    t0 = clock.now_ns()
    frame_t = episode.t_ns.astype(np.int64) - t0_rec
    q_rep = np.empty((episode.length, n))
    tcp_rep = np.empty((episode.length, 3))
    k = 0
    for t, q, g in zip(hr.t_ns - t0_rec, hr.q_cmd, hr.gripper_cmd, strict=True):
        while k < episode.length and frame_t[k] <= t:
            s = robot.read_state()
            q_rep[k], tcp_rep[k] = s.q, s.ee_pose.translation
            k += 1
        clock.sleep_until(t0 + int(t))
        robot.command(safety.filter(q), None if np.isnan(g) else float(g))
    while k < episode.length:
        clock.sleep_until(t0 + int(frame_t[k]))
        s = robot.read_state()
        q_rep[k], tcp_rep[k] = s.q, s.ee_pose.translation
        k += 1
    return ReplayResult.measure(episode, "highrate", q_rep, tcp_rep, False)


def _highrate(episode: Episode) -> HighRateStream:
    """The episode's control-rate stream; DatasetError when it has none."""
    hr = episode.highrate
    if hr is None or hr.t_ns.size == 0:
        raise DatasetError(f"episode {episode.index}: no control-rate stream to replay; load it (highrate=True)")
    return hr
