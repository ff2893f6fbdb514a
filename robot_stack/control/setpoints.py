"""Set-points from the real-time process to a robot that lives elsewhere: a shared-memory ring with timestamps.

The MuJoCo world (physics, the camera that renders it, the task that scores it) lives in the main process, while
the 500 Hz loop runs in the real-time process (:mod:`robot_stack.control.rt_process`). The loop's command sink is
a :class:`RingRobot`: each set-point is written with the time it was sent into a :class:`SetpointRing` (single
writer, no locks; a reader that falls more than the ring's capacity behind loses the oldest set-points and counts
them). On the main side, :class:`SetpointRelay` applies the set-points to the real robot object **at their own
times**: with a robot that has ``command_at(t_ns, q, gripper)`` (:class:`~robot_stack.sim.robot.SimRobot`), the
world is stepped to each set-point's time before it is applied, and :meth:`SetpointRelay.attach` makes the world
drain the ring before every sync (a render, a state read), so physics integrates exactly the set-point sequence
the real-time loop produced, however late the main process gets to it. The relay also publishes the robot's
measured state into the ring, which is what :meth:`RingRobot.read_state` returns (the loop seeds from it).

Times: monotonic ns; positions rad; gripper opening in [0, 1] (NaN in the ring = unchanged).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from robot_stack.clock import MonotonicClock
from robot_stack.control.shared import close_segment, open_segment
from robot_stack.errors import ConfigError, RobotError
from robot_stack.robots.base import JointLimits, Robot
from robot_stack.types import Pose, RobotState

log = logging.getLogger("robot_stack.control.setpoints")

__all__ = ["RingRobot", "SetpointRelay", "SetpointRing"]


class SetpointRing:
    """``capacity`` timestamped set-points of ``n`` joints plus one measured-state slot, in shared memory.

    Layout (int64 header: write count, state sequence; then per entry t_ns; q (capacity, n); gripper (capacity,);
    then the state slot: t_ns, q (n,), dq (n,), gripper).

    Args:
        n: joints.
        capacity: set-points kept (at 500 Hz, 1024 = about 2 s).
        name: attach to an existing ring (None: create one).
    """

    def __init__(self, n: int, capacity: int = 1024, name: str | None = None) -> None:
        if n < 1 or capacity < 2:
            raise ConfigError(f"SetpointRing: expected n >= 1 and capacity >= 2, got {n}, {capacity}")
        self.n, self.capacity = int(n), int(capacity)
        self.shm, self.owner = open_segment(8 * (2 + capacity + capacity * n + capacity + 1 + 2 * n + 1), name)
        buf, off = self.shm.buf, 0
        self._head = np.ndarray((2,), np.int64, buf, off)
        off += 16
        self._t = np.ndarray((capacity,), np.int64, buf, off)
        off += 8 * capacity
        self._q = np.ndarray((capacity, n), np.float64, buf, off)
        off += 8 * capacity * n
        self._g = np.ndarray((capacity,), np.float64, buf, off)
        off += 8 * capacity
        self._st_t = np.ndarray((1,), np.int64, buf, off)
        off += 8
        self._st = np.ndarray((2 * n + 1,), np.float64, buf, off)
        if self.owner:
            self._head[:] = 0
            self._st_t[0] = 0

    @property
    def name(self) -> str:
        return self.shm.name

    @property
    def written(self) -> int:
        """Set-points written so far."""
        return int(self._head[0])

    # ------------------------------------------------------------------------------------- writer (RT process)
    def write(self, t_ns: int, q: np.ndarray, gripper: float | None) -> None:
        k = int(self._head[0])
        i = k % self.capacity
        self._t[i] = t_ns
        self._q[i] = q
        self._g[i] = np.nan if gripper is None else gripper
        self._head[0] = k + 1  # published after the entry is complete

    # ---------------------------------------------------------------------------------------- readers
    def read_since(self, count: int) -> tuple[int, list[tuple[int, np.ndarray, float | None]], int]:
        """Set-points written after the first ``count``: (new count, entries oldest first, entries lost because
        the reader fell more than ``capacity`` behind)."""
        end = int(self._head[0])
        start = max(count, end - self.capacity + 1)  # one slot of slack: the writer may be filling it
        entries = []
        for k in range(start, end):
            i = k % self.capacity
            g = float(self._g[i])
            entries.append((k, int(self._t[i]), self._q[i].copy(), None if np.isnan(g) else g))
        safe_from = int(self._head[0]) - self.capacity + 1  # older entries may have been overwritten meanwhile
        out = [(t, q, g) for k, t, q, g in entries if k >= safe_from]
        lost = (start - count) + (len(entries) - len(out))
        return end, out, lost

    def publish_state(self, t_ns: int, q: np.ndarray, dq: np.ndarray, gripper: float) -> None:
        """Main side: the robot's measured state (seqlock'd by the header's second counter)."""
        n = self.n
        self._head[1] += 1
        self._st_t[0] = t_ns
        self._st[:n] = q
        self._st[n : 2 * n] = dq
        self._st[2 * n] = gripper
        self._head[1] += 1

    def read_state(self) -> tuple[int, np.ndarray, np.ndarray, float] | None:
        """The last published measured state (t_ns, q, dq, gripper), or None if none was published."""
        n = self.n
        for _ in range(1000):
            s1 = int(self._head[1])
            if s1 % 2 == 0:
                t, st = int(self._st_t[0]), self._st.copy()
                if int(self._head[1]) == s1:
                    return None if s1 == 0 else (t, st[:n], st[n : 2 * n], float(st[2 * n]))
        return None

    def close(self) -> None:
        del self._head, self._t, self._q, self._g, self._st_t, self._st
        close_segment(self.shm, self.owner)


class RingRobot(Robot):
    """The real-time process's command sink for a robot that lives in another process: commands go into a
    :class:`SetpointRing` with the time they were sent; the state is what the other side last published.

    Args:
        ring_name: the ring's shared-memory name.
        joint_names: the arm's joints.
        limits: the arm's joint limits.
        capacity: the ring's capacity (must match the creator's).
    """

    def __init__(self, ring_name: str, joint_names: Sequence[str], limits: JointLimits, capacity: int = 1024) -> None:
        self._names = tuple(joint_names)
        self._limits = limits
        self.ring = SetpointRing(len(self._names), capacity, ring_name)
        self._clock = MonotonicClock()

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def limits(self) -> JointLimits:
        return self._limits

    def read_state(self) -> RobotState:
        got = self.ring.read_state()
        if got is None:
            raise RobotError("RingRobot: the robot side has not published a state yet; start its SetpointRelay first")
        t, q, dq, g = got
        return RobotState(t, q, dq, Pose.identity("base", "tcp"), g)

    def command(self, q: np.ndarray, gripper: float | None = None) -> None:
        self.command_at(self._clock.now_ns(), q, gripper)

    def command_at(self, t_ns: int, q: np.ndarray, gripper: float | None = None) -> None:
        """Write the set-point meant for tick time ``t_ns`` into the ring."""
        arr = np.asarray(q, dtype=np.float64)
        if arr.shape != (len(self._names),) or not np.all(np.isfinite(arr)):
            raise RobotError(f"RingRobot.command: expected finite ({len(self._names)},) rad, got {arr!r}")
        self.ring.write(int(t_ns), arr, gripper)


class SetpointRelay:
    """Main side: applies the ring's set-points to ``robot`` in order, at their own times when the robot supports it
    (``command_at(t_ns, q, gripper)``), else as they come (``command``).

    Args:
        robot: the robot object in this process (e.g. a :class:`~robot_stack.sim.robot.SimRobot`).
        ring: the ring the real-time process writes (created here: pass ``ring.name`` to :class:`RingRobot`).
    """

    def __init__(self, robot: Robot, ring: SetpointRing) -> None:
        self.robot = robot
        self.ring = ring
        self._count = 0
        self._lock = threading.Lock()
        self._draining = False
        self.applied = 0
        self.lost = 0
        self.errors = 0
        self._command_at = getattr(robot, "command_at", None)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def publish_state(self) -> None:
        """Put the robot's measured state into the ring (the real-time loop seeds from it)."""
        st = self.robot.read_state()
        self.ring.publish_state(st.t_ns, st.q, st.dq, st.gripper)

    def drain(self, _now_ns: int | None = None) -> int:
        """Apply every new set-point; return how many. Re-entrant calls (a ``command_at`` that syncs the world,
        whose hook calls back here) return 0."""
        with self._lock:
            if self._draining:
                return 0
            self._draining = True
        try:
            self._count, entries, lost = self.ring.read_since(self._count)
            if lost:
                self.lost += lost
                log.warning("set-point relay fell behind: %d set-points lost (%d in total)", lost, self.lost)
            for t_ns, q, g in entries:
                try:
                    if self._command_at is not None:
                        self._command_at(t_ns, q, g)
                    else:
                        self.robot.command(q, g)
                    self.applied += 1
                except Exception as exc:  # counted; the next set-points still go through
                    self.errors += 1
                    if self.errors == 1:
                        log.error("set-point relay: the robot refused a set-point (further errors counted): %s", exc)
            return len(entries)
        finally:
            with self._lock:
                self._draining = False

    def attach(self, world: Any) -> None:
        """Make ``world`` (a :class:`~robot_stack.sim.world.SimWorld`) drain the ring before every sync to now."""
        world.pre_sync = self.drain

    def start(self, period_s: float = 0.002) -> None:
        """Drain from a background thread every ``period_s`` too (for robots nobody else syncs)."""
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(period_s):
                self.drain()

        self._thread = threading.Thread(target=run, name="setpoint-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
        self.drain()
