"""The robot-side policy cycle: capture → stale-data guard → base-frame XYZ → policy endpoint → decoder → executor.

:class:`PolicyCycle` is the one loop body every driver runs (demo, hardware-in-the-loop harness, ROS policy-client
node, evaluation). Its stages: :mod:`.observation` (the one observation builder), :mod:`.guard` (stale data),
:mod:`.pipelining` (capture / send ahead while a request is in flight), :mod:`.chunks` (reply -> action chunk),
:mod:`.recovery` (retreat when the policy is stuck at a limit), :mod:`.latency` (the online delay estimate),
:mod:`.rtc` (real-time chunking's prefix), :mod:`.request` (the observation's wire form for the served model), and
its seams in :mod:`.ports`.
"""

from robot_stack.cycle.chunks import chunk_from_reply
from robot_stack.cycle.guard import GuardConfig, ObservationGuard
from robot_stack.cycle.latency import DelayEstimator
from robot_stack.cycle.observation import Capture, ObservationSource, observation_from
from robot_stack.cycle.policy_cycle import CycleResult, PolicyCycle
from robot_stack.cycle.ports import PolicyEndpoint, TrajectorySink
from robot_stack.cycle.recovery import RecoveryConfig, RecoveryMonitor, retreat_trajectory
from robot_stack.cycle.request import RequestLayout
from robot_stack.cycle.rtc import RtcPrefix

__all__ = [
    "Capture",
    "CycleResult",
    "DelayEstimator",
    "GuardConfig",
    "ObservationGuard",
    "ObservationSource",
    "PolicyCycle",
    "PolicyEndpoint",
    "RecoveryConfig",
    "RecoveryMonitor",
    "RequestLayout",
    "RtcPrefix",
    "TrajectorySink",
    "chunk_from_reply",
    "observation_from",
    "retreat_trajectory",
]
