"""What ``robot-stack up`` reports and shows of a running graph: episodes, successes, holds (ROS-free).

The ROS ``monitor_node`` (ros2_ws) subscribes to the graph's topics and hands decoded values here: the sim
bridge's task status (episode, touches, timeouts), the executor's state (every entry into ``holding`` is a hold),
joint states, trajectories and camera frames. With a :class:`~robot_stack.viewer.live.LiveView` they are shown
live (``up --display``) or saved (``up --save``). On exit the counts are written as JSON for the supervisor's
summary, which adds the restarts of each process.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.types import Frame, JointTrajectory

__all__ = ["GraphMonitor", "read_summary"]


class GraphMonitor:
    """Counts and (optionally) shows a running graph.

    Args:
        view: a :class:`~robot_stack.viewer.stack_view.CellView` to feed, or None (counts only).
    """

    def __init__(self, view: Any = None) -> None:
        self.view = view
        self.episodes = 0
        self.successes = 0
        self.timeouts = 0
        self.holds = 0
        self.safety_interventions = 0
        self._state = ""
        self._has_task = False
        self._lock = threading.Lock()

    def on_task_status(self, values: dict[str, str]) -> None:
        """The sim bridge's ``task_status`` key/values (``episode``, ``touches``, ``timeouts``)."""
        with self._lock:
            self._has_task = True
            try:
                self.episodes = max(self.episodes, int(values.get("episode", "0")) + 1)
                self.successes = max(self.successes, int(values.get("touches", "0")))
                self.timeouts = max(self.timeouts, int(values.get("timeouts", "0")))
            except ValueError:
                return

    def on_executor_state(self, state: str, t_ns: int) -> None:
        """The executor's state (``tracking``, ``holding`` ...): an entry into ``holding`` is a hold."""
        with self._lock:
            entered = state == "holding" and self._state != "holding"
            if entered:
                self.holds += 1
            self._state = state
        if entered and self.view is not None:
            self.view.event("hold", f"executor holding (#{self.holds})", "ERROR", t_ns)

    def on_joint_state(self, t_ns: int, q: np.ndarray) -> None:
        if self.view is not None:
            self.view.joints(t_ns, q)

    def on_trajectory(self, traj: JointTrajectory) -> None:
        if self.view is not None:
            self.view.plan(traj)

    def on_frame(self, frame: Frame) -> None:
        if self.view is not None:
            self.view.step(frame.t_capture_ns, frames=[frame])

    def summary(self) -> dict[str, Any]:
        """``episodes``, ``successes``, ``timeouts`` (None without a task status), ``holds``."""
        with self._lock:
            task = self._has_task
            return {
                "episodes": self.episodes if task else None,
                "successes": self.successes if task else None,
                "timeouts": self.timeouts if task else None,
                "holds": self.holds,
            }

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`summary` as JSON (atomically)."""
        out = Path(path)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(self.summary()))
        os.replace(tmp, out)


def read_summary(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The monitor's summary, or None when it wrote none (it did not run or was killed)."""
    try:
        return dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return None
