"""What travels between the ingress and a replica inside Ray (Ray's own serialisation; never on the robot wire).

Deadlines cross machines as *budgets*: monotonic clocks of two nodes are unrelated, so the ingress sends the time
left (ns) and the replica turns it into a deadline on its own clock when the request arrives (lenient by the
transit time, a fraction of a millisecond on a LAN).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ReplicaAnswer", "ReplicaRequest"]


@dataclass(frozen=True)
class ReplicaRequest:
    """One robot's request, as the ingress forwards it.

    Attributes:
        robot, client, request_id: as in :class:`robot_stack.transport.server.BatchItem`.
        arrays: name -> request array (the decoded, validated observation).
        meta: the request's meta map.
        budget_ns: time left before the request's deadline when it was sent, ns.
        attempt: 0 for the first try, n for the n-th retry after a failed replica.
    """

    robot: str
    client: str
    request_id: int
    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, Any]
    budget_ns: int
    attempt: int = 0


@dataclass(frozen=True)
class ReplicaAnswer:
    """A replica's answer to one :class:`ReplicaRequest`.

    Attributes:
        arrays, meta: the model's outputs and reply meta (``error_code`` empty).
        error_code: ``""`` (ok), ``policy_error`` (the model refused the input), ``deadline_exceeded`` (the budget
            ran out in the replica's queue; the model never ran) or ``handler_error`` (anything else).
        error: the reason, for the robot.
        replica: the replica's id; batch: the size of the micro-batch it ran in; infer_ms: the model call.
    """

    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    error_code: str = ""
    error: str = ""
    replica: str = ""
    batch: int = 0
    infer_ms: float = 0.0
