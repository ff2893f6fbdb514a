"""``robot-stack serve --ray``: deploy the models on Ray Serve and put the ZeroMQ ingress in front of them."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from robot_stack.fleet.cluster import RayCluster, connect
from robot_stack.fleet.config import FleetConfig
from robot_stack.fleet.dispatcher import FleetDispatcher
from robot_stack.transport.admission import AdmissionLimits
from robot_stack.transport.protocol import DEFAULT_MAX_MESSAGE_BYTES
from robot_stack.transport.server import PolicyServer

__all__ = ["Fleet", "open_fleet", "serve_fleet"]

log = logging.getLogger("robot_stack.fleet.serve")


class Fleet:
    """A running fleet: the Ray cluster with its deployments, the dispatcher and the ZeroMQ ingress.

    Attributes:
        cluster, dispatcher, server: the three parts; ``server.endpoint`` is where robots connect.
    """

    def __init__(self, cluster: RayCluster, dispatcher: FleetDispatcher, server: PolicyServer) -> None:
        self.cluster = cluster
        self.dispatcher = dispatcher
        self.server = server

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def close(self) -> None:
        """Stop the ingress, then the dispatcher, then leave Ray (stopping the instance if it was ours)."""
        self.server.close()
        self.dispatcher.close()
        self.cluster.close()


@contextlib.contextmanager
def open_fleet(
    manifests: Sequence[str | Path],
    config: FleetConfig,
    bind: str = "tcp://127.0.0.1:5555",
    *,
    cluster: RayCluster | None = None,
    provider: str | None = None,
    engine: str = "ort",
    precision: str | None = None,
    curve_secret_key: bytes | None = None,
    authorized_client_keys: Any = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    limits: AdmissionLimits | None = None,
    attach: bool = False,
) -> Iterator[Fleet]:
    """Deploy ``manifests`` (the first is the default model) and serve them on ``bind``; undo it all on exit.

    ``cluster``: an already connected :class:`RayCluster` to deploy on (it is then left connected, its
    deployments deleted); None = :func:`connect` with ``config``. The other arguments are those of
    :class:`PolicyServer`; the admission caps default to room for the whole fleet's capacity. ``attach``: serve
    the applications the cluster already runs (:meth:`RayCluster.attach`) instead of deploying them.
    """
    own = cluster is None
    ray_cluster = connect(config) if cluster is None else cluster
    dispatcher: FleetDispatcher | None = None
    added: list[str] = []
    try:
        for manifest in manifests:
            if attach:
                added.append(ray_cluster.attach(manifest, config).model_id)
            else:
                model = ray_cluster.deploy(manifest, config, provider=provider, engine=engine, precision=precision)
                added.append(model.model_id)
        dispatcher = FleetDispatcher(ray_cluster, config, added)
        if limits is None:
            limits = AdmissionLimits(
                max_pending=max(AdmissionLimits.max_pending, 2 * dispatcher.capacity),
                max_pending_bytes=max(AdmissionLimits.max_pending_bytes, max_message_bytes),
            )
        server = PolicyServer(
            dispatcher,
            bind,
            max_message_bytes=max_message_bytes,
            curve_secret_key=curve_secret_key,
            authorized_client_keys=authorized_client_keys,
            limits=limits,
        ).start()
        fleet = Fleet(ray_cluster, dispatcher, server)
        try:
            yield fleet
        finally:
            server.close()
    finally:
        if dispatcher is not None:
            dispatcher.close()
        if own:
            ray_cluster.close()
        else:
            _delete_models(ray_cluster, added)


def _delete_models(cluster: RayCluster, model_ids: Sequence[str]) -> None:
    """Undeploy the models this fleet deployed (attached ones stay) and forget them."""
    from ray import serve

    for model_id in model_ids:
        model = cluster.models[model_id]
        try:
            if not model.attached:
                serve.delete(model_id, _blocking=True)
        except Exception:
            log.warning("could not delete application %s", model_id, exc_info=True)
        cluster.models.pop(model_id, None)


def serve_fleet(
    manifests: Sequence[str | Path],
    config: FleetConfig,
    bind: str = "tcp://127.0.0.1:5555",
    *,
    provider: str | None = None,
    engine: str = "ort",
    precision: str | None = None,
    curve_secret: str | Path | None = None,
    allow_dir: str | Path | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop_event: threading.Event | None = None,
    attach: bool = False,
) -> None:
    """Serve ``manifests`` on a Ray fleet until SIGINT/SIGTERM (or ``stop_event``). Blocking.

    The CURVE flags are those of ``robot-stack serve`` (:func:`robot_stack.policy.service.load_server_keys`).
    """
    from robot_stack.policy.service import load_server_keys

    secret, allowed = load_server_keys(bind, curve_secret, allow_dir)
    stop = stop_event or threading.Event()
    previous = _stop_on_signals(stop)
    try:
        with open_fleet(
            manifests,
            config,
            bind,
            provider=provider,
            engine=engine,
            precision=precision,
            curve_secret_key=secret,
            authorized_client_keys=allowed,
            attach=attach,
        ) as fleet:
            log.info(
                "fleet serving %s on %s (Ray %s, capacity %d in flight, CURVE %s)",
                list(fleet.cluster.models),
                fleet.endpoint,
                config.address or "local loopback instance",
                fleet.dispatcher.capacity,
                "off" if secret is None else f"on, {len(allowed) if allowed else 'any'} client key(s)",
            )
            _stop_on_signals(stop)  # again: ray.init installed its own SIGTERM handler (an abrupt exit)
            if on_ready is not None:
                on_ready(fleet.endpoint)
            while not stop.wait(0.2):
                pass
            log.info("stopping: %s; fleet %s", fleet.server.stats(), fleet.dispatcher.stats)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGINT / SIGTERM set ``stop`` (main thread only); return the handlers replaced."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    return previous


def main(argv: Sequence[str] | None = None) -> int:
    """Subprocess entry (``python -m robot_stack.fleet.serve``): ``robot-stack serve --ray`` that prints ``READY
    <endpoint>`` once serving (the bench starts fleets this way)."""
    import argparse
    import sys

    from robot_stack.errors import RobotStackError
    from robot_stack.fleet.cli import add_fleet_arguments, run_fleet
    from robot_stack.policy.cli import add_serve_parser

    parser = argparse.ArgumentParser(prog="python -m robot_stack.fleet.serve")
    add_serve_parser(parser.add_subparsers(dest="command", required=True), (add_fleet_arguments, run_fleet))
    args = parser.parse_args(["serve", "--ray", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return run_fleet(args, on_ready=lambda endpoint: print(f"READY {endpoint}", flush=True))
    except RobotStackError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
