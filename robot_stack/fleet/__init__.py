"""Serve a robot fleet on Ray Serve: the ZeroMQ ingress (same protocol, CURVE, caps, admission, deadlines, health
as ``robot-stack serve``) forwards decoded requests, earliest deadline first, to Ray Serve deployments of the
policy runtime -- replicas on any node of a Ray cluster, micro-batched per replica, several models side by side,
a failed replica's requests retried on another within their deadline (docs/fleet.md).

Importing this package does not import Ray; :mod:`.cluster`, :mod:`.replica` and :mod:`.dispatcher` do.
"""

from __future__ import annotations

from robot_stack.fleet.config import FleetConfig, parse_autoscale

__all__ = ["FleetConfig", "parse_autoscale"]
