"""Episodes of the demo task ("reach and touch the red cube") for a long-running simulated robot (the sim bridge).

``robot-stack demo`` ends an episode at the touch (:meth:`ReachTouchTask.is_done`) and starts the next one with a
new seeded cube pose. A ROS graph runs continuously, so :class:`TaskEpisodes` does the same bookkeeping on the sim
bridge's clock: it checks the task on every call of :meth:`update` (the bridge calls it at its joint-state rate, so
a brushing touch between two policy cycles is not missed), reports the status, and — with ``auto_reset`` — starts a
new episode ``reset_pause_s`` after a touch or a timeout. :meth:`reset` starts one on request (the bridge's
``std_srvs/Trigger`` service).

A new episode re-places the cube (seed ``base_seed + episode``) and leaves the arm where it is: the executor owns
the arm's set-point, and teleporting the arm under it would only make the executor drive it back at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import ConfigError
from robot_stack.sim.task import ReachTouchTask

log = logging.getLogger("robot_stack.graph.episodes")

__all__ = ["EpisodeStatus", "TaskEpisodes"]


@dataclass(frozen=True)
class EpisodeStatus:
    """One look at the current episode.

    Attributes:
        episode: episode number, 0 for the first.
        seed: cube placement seed of this episode.
        state: ``running`` | ``touched`` | ``timeout``.
        distance_m: TCP to the centre of the cube's top face, metres.
        elapsed_s: clock seconds since the episode started.
        time_to_success_s: episode seconds of the first touch, None before it.
        touches: episodes that ended with a touch so far (this one included).
        timeouts: episodes that timed out so far (this one included).
    """

    episode: int
    seed: int
    state: str
    distance_m: float
    elapsed_s: float
    time_to_success_s: float | None
    touches: int
    timeouts: int

    @property
    def touched(self) -> bool:
        return self.state == "touched"

    def values(self) -> tuple[tuple[str, str], ...]:
        """Key/value strings (``diagnostic_msgs/KeyValue``); ``time_to_success_s`` is ``""`` before a touch."""
        tts = "" if self.time_to_success_s is None else f"{self.time_to_success_s:.3f}"
        return (
            ("episode", str(self.episode)),
            ("seed", str(self.seed)),
            ("state", self.state),
            ("touched", str(self.touched).lower()),
            ("distance_m", f"{self.distance_m:.4f}"),
            ("elapsed_s", f"{self.elapsed_s:.3f}"),
            ("time_to_success_s", tts),
            ("touches", str(self.touches)),
            ("timeouts", str(self.timeouts)),
        )


class TaskEpisodes:
    """Runs :class:`ReachTouchTask` episodes back to back on a live world.

    Args:
        task: the task (its world is the robot's world).
        base_seed: seed of episode 0; episode ``k`` uses ``base_seed + k``.
        auto_reset: start the next episode by itself ``reset_pause_s`` after a touch or a timeout.
        reset_pause_s: how long a finished episode stays finished before an automatic reset, seconds.
    """

    def __init__(
        self, task: ReachTouchTask, base_seed: int = 0, auto_reset: bool = True, reset_pause_s: float = 2.0
    ) -> None:
        if reset_pause_s < 0:
            raise ConfigError(f"reset_pause_s must be >= 0 s, got {reset_pause_s}")
        self.task = task
        self.base_seed = int(base_seed)
        self.auto_reset = auto_reset
        self.reset_pause_s = reset_pause_s
        self.episode = -1
        self.touches = 0
        self.timeouts = 0
        self._ended: str | None = None
        self._ended_at_s = 0.0
        self.reset()

    @property
    def seed(self) -> int:
        return self.base_seed + self.episode

    def reset(self) -> EpisodeStatus:
        """Start the next episode: new seeded cube pose, arm left where it is, episode clock restarted."""
        world = self.task.world
        with world.lock:
            q = world.arm_q() if self.episode >= 0 else None
            self.episode += 1
            self.task.reset(self.seed)
            if q is not None:
                world.set_arm_q(q)  # also the servo target: the executor's next command follows within a tick
        self._ended = None
        status = self.status()
        log.info("episode %d (seed %d): cube top at %s", self.episode, self.seed,
                 np.round(self.task.cube_top_center(), 3))  # fmt: skip
        return status

    def restart_clock(self) -> None:
        """Start the current episode's clock over, e.g. when the robot first comes under control (the demo's episode
        clock starts with the control loop, not with the process). Only before the arm moved: it re-places
        the same seeded cube and puts the arm at home."""
        self.task.reset(self.seed)
        self._ended = None

    def status(self) -> EpisodeStatus:
        """The current episode's status (reads the world, does not step it or reset anything)."""
        state = self._ended or "running"
        return EpisodeStatus(
            self.episode, self.seed, state, self.task.tcp_distance_m(),
            self.task.elapsed_s(), self.task.time_to_success_s, self.touches, self.timeouts,
        )  # fmt: skip

    def update(self) -> tuple[EpisodeStatus, bool]:
        """Check the task; end the episode at a touch or a timeout; auto-reset after the pause.

        Returns:
            (status, changed): ``changed`` is True when the episode ended or a new one started in this call.
        """
        if self._ended is None:
            if self.task.is_success():
                self._ended, self.touches = "touched", self.touches + 1
            elif self.task.is_timeout():
                self._ended, self.timeouts = "timeout", self.timeouts + 1
            if self._ended is not None:
                self._ended_at_s = self.task.elapsed_s()
                status = self.status()
                log.info("episode %d %s: %s", self.episode, self._ended, dict(status.values()))
                return status, True
        elif self.auto_reset and self.task.elapsed_s() - self._ended_at_s >= self.reset_pause_s:
            return self.reset(), True
        return self.status(), False
