"""The ``serve --ray`` flags and their command (wired into ``robot-stack serve`` by :mod:`robot_stack.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from robot_stack.errors import ConfigError
from robot_stack.fleet.config import FleetConfig, parse_autoscale

__all__ = ["add_fleet_arguments", "fleet_config", "run_fleet"]


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--ray [--address ADDR] --replicas N | --autoscale MIN,MAX [--gpus-per-replica F] ...``."""
    group = parser.add_argument_group("fleet (Ray Serve)")
    group.add_argument("--ray", action="store_true", help="serve through Ray Serve replicas (docs/fleet.md)")
    group.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (ray://head:10001, head:6379 or auto); default: a private loopback-only instance",
    )
    scale = group.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, default=None, help="replicas per model (default 1)")
    scale.add_argument("--autoscale", default=None, metavar="MIN,MAX", help="autoscale replicas per model")
    group.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs per replica (fractions share one)")
    group.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs reserved per replica")
    group.add_argument("--max-batch", type=int, default=None, help="micro-batch per replica (default: manifest)")
    group.add_argument("--batch-wait-ms", type=float, default=2.0, help="wait for a batch to fill, ms")
    group.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the private local instance (default all)")
    group.add_argument(
        "--attach",
        action="store_true",
        help="serve the models' applications the cluster already runs (KubeRay RayService) instead of deploying them",
    )


def fleet_config(args: argparse.Namespace) -> FleetConfig:
    """The :class:`FleetConfig` of parsed ``serve --ray`` flags.

    Raises:
        ConfigError: inconsistent flags (e.g. ``--autoscale`` that is not MIN,MAX).
    """
    return FleetConfig(
        address=args.address,
        replicas=args.replicas if args.replicas is not None else 1,
        autoscale=parse_autoscale(args.autoscale) if args.autoscale else None,
        gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica,
        threads=1 if args.threads is None else (args.threads or None),  # per replica: 1 unless asked; 0 = all
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        num_cpus=args.ray_cpus,
    )


def run_fleet(args: argparse.Namespace, on_ready: Callable[[str], None] | None = None) -> int:
    """``robot-stack serve --ray ...``: serve every ``--manifest`` on the fleet until interrupted; ``on_ready``
    gets the endpoint once robots can connect."""
    from robot_stack.fleet.serve import serve_fleet

    if args.strict:
        raise ConfigError("--strict is not supported with --ray (each replica falls back and logs it)")
    serve_fleet(
        args.manifest,
        fleet_config(args),
        args.bind,
        provider=args.provider,
        engine=args.engine,
        precision=args.precision,
        curve_secret=args.curve_secret,
        allow_dir=args.allow_dir,
        attach=args.attach,
        on_ready=on_ready,
    )
    return 0
