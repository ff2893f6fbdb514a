"""The seams of the policy cycle, as typed protocols: where the observation goes, where the trajectory goes.

* :class:`PolicyEndpoint` — answers an observation with an action chunk. :class:`~robot_stack.transport.client
  .PolicyClient` (ZeroMQ) is the production endpoint; anything with the same ``infer`` serves (a fault-injecting
  client in the hardware-in-the-loop harness, another protocol's client).
* :class:`TrajectorySink` — takes the decoded trajectory. The in-process :class:`~robot_stack.control.executor
  .Executor` and :class:`~robot_stack.control.scheduler.ChunkScheduler` are sinks; so is the ROS policy-client
  node's trajectory publisher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from robot_stack.transport.client import Reply
from robot_stack.types import JointTrajectory

__all__ = ["PolicyEndpoint", "TrajectorySink"]


@runtime_checkable
class PolicyEndpoint(Protocol):
    """Answers one observation (its arrays and meta) within ``timeout_s``; raises TransportError otherwise, and
    without sending whatever ``before_send`` raises (it runs right before the request would leave)."""

    def infer(
        self,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> Reply: ...


@runtime_checkable
class TrajectorySink(Protocol):
    """Takes a joint trajectory; returns False (having logged why) when it refuses it."""

    def set_trajectory(self, traj: JointTrajectory) -> bool: ...
