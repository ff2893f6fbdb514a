"""A Serve application builder for declarative deployments (KubeRay ``RayService``, ``serve deploy``).

``serveConfigV2`` names it as ``import_path: robot_stack.fleet.app:build`` with ``args`` (all optional but the
manifest): ``manifest`` (path on every node), ``max_batch``, ``batch_wait_ms``, ``threads``, ``provider``,
``engine``, ``precision``. The application's ``name`` must be the manifest's ``model_id``; the ingress then runs
with ``--attach`` (it serves the applications the cluster already has instead of deploying its own). Replica
counts, autoscaling and resources come from the ``deployments`` section of the Serve config (deployment name
``PolicyReplica``), as Serve expects.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from robot_stack.errors import ConfigError
from robot_stack.fleet.replica import PolicyReplica, model_digest
from robot_stack.policy.manifest import PolicyManifest

__all__ = ["build", "replica_deployment"]

#: Serve's name of the replica deployment inside every model application.
DEPLOYMENT = "PolicyReplica"


def replica_deployment(max_batch: int, **options: Any) -> Any:
    """``serve.deployment(PolicyReplica)`` with the fleet's defaults (two micro-batches in flight per replica,
    1 s health checks) and ``options`` on top."""
    defaults: dict[str, Any] = {
        "name": DEPLOYMENT,
        "max_ongoing_requests": 2 * max_batch,
        "health_check_period_s": 1.0,
        "health_check_timeout_s": 10.0,
        "graceful_shutdown_timeout_s": 2.0,
    }
    return serve.deployment(PolicyReplica).options(**{**defaults, **options})


def build(args: dict[str, Any]) -> Any:
    """The bound application of one model (see the module docstring for ``args``).

    Raises:
        ConfigError: no ``manifest`` in ``args``, or it cannot be loaded.
    """
    if "manifest" not in args:
        raise ConfigError("robot_stack.fleet.app:build needs args.manifest (the model manifest path on every node)")
    path = str(args["manifest"])
    manifest = PolicyManifest.load(path)
    max_batch = int(args.get("max_batch", manifest.max_batch))
    threads = args.get("threads", 1)
    return replica_deployment(max_batch).bind(
        path,
        model_digest(path),
        args.get("provider"),
        str(args.get("engine", "ort")),
        args.get("precision"),
        None if threads in (None, 0, "0") else int(threads),
        max_batch,
        float(args.get("batch_wait_ms", 2.0)),
    )
