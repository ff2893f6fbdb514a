"""``NodeExecutor``: rclpy's thread-pool executor without its busy loop.

rclpy's :class:`~rclpy.executors.MultiThreadedExecutor` (9.1.2, the Kilted wheel) hands each ready callback to a
thread pool as a task, and on its next wait yields again every task that has not *started* yet — one still queued
in the pool is submitted a second, third, … time, and while any is queued the wait returns at once. The spin thread
then loops on the GIL and the pool's threads barely run: measured here with two processes on loopback (a 100 Hz
joint-state stream and 4 Hz reliable 640x480 RGB-D pairs into a two-thread subscriber), 37 of ~1,500 joint states
were delivered and most image pairs arrived 1-9 s late at 100 % CPU, against 1,448 and none late with one thread
(ros2/rclpy#1452; fixed upstream by ros2/rclpy#1547, after the 9.1.2 wheel).

This executor submits a task once: a task yielded again while it still waits in the pool is not resubmitted; the
spin thread instead sleeps (releasing the GIL) until a pool thread picks a task up. Callback groups, coroutine
callbacks and shutdown behave as in the base class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    TimeoutException,
)

#: Longest the spin thread sleeps on a task still queued in the pool before it looks at the graph again, s.
QUEUED_TASK_WAIT_S = 0.05


class NodeExecutor(MultiThreadedExecutor):
    """A :class:`~rclpy.executors.MultiThreadedExecutor` that never queues one task twice (see the module doc).

    Attributes:
        submitted: tasks handed to the pool so far (each at most once while it waits there).
        requeues_avoided: times a task still waiting in the pool was yielded again and not resubmitted.
    """

    def __init__(self, num_threads: int = 2, *, context: Any = None) -> None:
        super().__init__(num_threads, context=context)
        self._queued: set[Any] = set()  # tasks submitted to the pool that no pool thread has picked up yet
        self._queued_lock = threading.Lock()
        self._picked_up = threading.Event()  # set whenever a pool thread picks a task up
        self.submitted = 0
        self.requeues_avoided = 0

    def _run_in_pool(self, task: Any) -> None:
        with self._queued_lock:
            self._queued.discard(task)
            self._picked_up.set()
        task()

    def _spin_once_impl(self, timeout_sec: Any = None, wait_condition: Callable[[], bool] = lambda: False) -> None:
        try:
            task, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        with self._queued_lock:
            queued = task in self._queued
            if queued:
                self._picked_up.clear()
                self.requeues_avoided += 1
            else:
                self._queued.add(task)
                self.submitted += 1
        if queued:
            self._picked_up.wait(QUEUED_TASK_WAIT_S)  # the GIL goes to the pool until one of its threads moves
            return
        self._executor.submit(self._run_in_pool, task)
        self._futures.append(task)
        for future in self._futures[:]:  # as the base class: drop finished tasks, raise their exceptions
            if future.done():
                self._futures.remove(future)
                future.result()
