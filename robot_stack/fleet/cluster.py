"""Join or start a Ray cluster and deploy models on it with Ray Serve.

**Security by default.** Without an address, :func:`connect` starts a private single-node Ray instance on this
machine in Ray's single-machine mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: the node address is loopback, and
GCS, raylet, workers, agents and replicas all listen on 127.0.0.1 only -- checked by ``tests/test_fleet.py``),
with Ray's token authentication, without dashboard, usage statistics or Serve's HTTP proxy: the only way in for a
robot is the ZeroMQ ingress (CURVE, caps, admission). Joining a multi-node cluster takes an explicit
``--address``; securing that cluster's network (a private network, Ray's token authentication) is the cluster
operator's job (docs/fleet.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robot_stack.errors import ConfigError
from robot_stack.fleet.config import FleetConfig

__all__ = ["DeployedModel", "RayCluster", "connect", "deployment_options"]

log = logging.getLogger("robot_stack.fleet.cluster")

#: How long a deployment on the private instance waits for resources still being released before it is refused (s).
ROOM_WAIT_S = 15.0

#: Quiet, private defaults for an instance this process starts (set before ``import ray``).
_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}


def _ray() -> Any:
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"Ray is not installed ({exc}); pip install 'robot-stack[fleet]' to serve on a Ray cluster"
        ) from exc
    return ray


@dataclass(frozen=True)
class DeployedModel:
    """A model deployed as one Serve application (named by its model id).

    Attributes:
        model_id: the application's name and the id robots ask for.
        manifest_path: absolute path of its manifest (the same on every node).
        max_batch: micro-batch size per replica; max_ongoing: requests one replica holds at once (running +
            gathering the next batch); max_replicas: the most replicas it may have.
        attached: served, not deployed, by this process (:meth:`RayCluster.attach`): left running on close.
    """

    model_id: str
    manifest_path: str
    max_batch: int
    max_ongoing: int
    max_replicas: int
    attached: bool = False

    @property
    def capacity(self) -> int:
        """Requests the whole deployment can hold at once (the ingress never sends it more)."""
        return self.max_ongoing * self.max_replicas


class RayCluster:
    """A connection to Ray (joined or started) with Serve running on it; :meth:`close` undoes what it did.

    Use :func:`connect` to make one.
    """

    def __init__(self, started: bool, address: str | None) -> None:
        self.started = started
        self.address = address
        self.models: dict[str, DeployedModel] = {}
        self._closed = False
        #: Serialises this process's calls into Serve's API: Ray Serve 2.60 builds deployment configs with a
        #: process-global cloudpickle registration that two threads at once can break ("not registered for pickle
        #: by value"); the dispatcher's status poller and a deployment would otherwise race.
        self.lock = threading.RLock()

    def deploy(
        self,
        manifest_path: str | Path,
        config: FleetConfig,
        *,
        provider: str | None = None,
        engine: str = "ort",
        precision: str | None = None,
    ) -> DeployedModel:
        """Deploy one model (blocks until its replicas are running); return its description.

        Raises:
            ConfigError: the manifest is unreadable, the model id is already deployed, the private instance has no
                room for the replicas, or the replicas failed to start (the reason Ray reports).
        """
        from ray import serve

        from robot_stack.fleet.app import replica_deployment
        from robot_stack.fleet.replica import model_digest

        path, manifest = self._manifest(manifest_path)
        max_batch = int(config.max_batch or manifest.max_batch)
        options = deployment_options(config, max_batch)
        with self.lock:
            deployment = replica_deployment(max_batch, **options)
        app = deployment.bind(
            str(path),
            model_digest(path),
            provider,
            engine,
            precision,
            config.threads,
            max_batch,
            config.batch_wait_ms,
        )
        if self.started:
            self._check_room(manifest.model_id, config)
        try:
            with self.lock:
                serve.run(app, name=manifest.model_id, route_prefix=None)
        except Exception as exc:  # Ray reports a failed deployment as a RuntimeError with the replica's traceback
            raise ConfigError(f"deploying {manifest.model_id} on Ray Serve failed: {exc}") from exc
        model = DeployedModel(manifest.model_id, str(path), max_batch, 2 * max_batch, config.max_replicas)
        self.models[model.model_id] = model
        log.info(
            "deployed %s: %s replicas, max_batch %d, %.2g GPU + %.2g CPU per replica",
            model.model_id,
            f"{config.autoscale[0]}..{config.autoscale[1]}" if config.autoscale else config.replicas,
            max_batch,
            config.gpus_per_replica,
            config.cpus_per_replica,
        )
        return model

    def _check_room(self, model_id: str, config: FleetConfig, wait_s: float = ROOM_WAIT_S) -> None:
        """On the private instance nothing adds resources later, and Serve waits forever for replicas it cannot
        place: refuse (:class:`ConfigError`) replicas that need more CPUs / GPUs than the instance has free, after
        up to ``wait_s`` for resources still being released (a model just deleted)."""
        ray = _ray()
        replicas = max(config.autoscale[0], 1) if config.autoscale else config.replicas
        need = {"CPU": replicas * config.cpus_per_replica, "GPU": replicas * config.gpus_per_replica}
        total = ray.cluster_resources()
        t_end = time.monotonic() + wait_s
        while True:
            free = ray.available_resources()
            short = {k: v for k, v in need.items() if v > 0 and v > free.get(k, 0.0) + 1e-6}
            if not short or any(v > total.get(k, 0.0) + 1e-6 for k, v in short.items()) or time.monotonic() > t_end:
                break
            time.sleep(0.5)
        if short:
            have = ", ".join(f"{free.get(k, 0.0):g} of {total.get(k, 0.0):g} {k}" for k in short)
            raise ConfigError(
                f"cannot place {model_id}: {replicas} replica(s) need "
                + ", ".join(f"{v:g} {k}" for k, v in short.items())
                + f" but this private Ray instance has {have} free (Serve would wait for them forever); lower "
                "--replicas or --cpus-per-replica / --gpus-per-replica, or give the instance more with --ray-cpus"
            )

    def attach(self, manifest_path: str | Path, config: FleetConfig) -> DeployedModel:
        """Serve a model the cluster already runs (an application named by its model id, built by
        :func:`robot_stack.fleet.app.build`, e.g. by a KubeRay ``RayService``); it is left running on
        :meth:`close`. ``config.max_replicas`` and ``config.max_batch`` must match the application's (they size
        the ingress's window of requests in flight).

        Raises:
            ConfigError: the cluster has no running application of that name.
        """
        from ray import serve

        path, manifest = self._manifest(manifest_path)
        with self.lock:
            apps = serve.status().applications
        if manifest.model_id not in apps:
            raise ConfigError(
                f"the Ray cluster runs no Serve application {manifest.model_id!r} (it runs {sorted(apps)}); deploy "
                "it (RayService serveConfigV2, docs/fleet.md) or drop --attach to deploy it from here"
            )
        max_batch = int(config.max_batch or manifest.max_batch)
        model = DeployedModel(manifest.model_id, str(path), max_batch, 2 * max_batch, config.max_replicas, True)
        self.models[model.model_id] = model
        return model

    def _manifest(self, manifest_path: str | Path) -> tuple[Path, Any]:
        from robot_stack.policy.manifest import PolicyManifest

        path = Path(manifest_path).resolve()
        manifest = PolicyManifest.load(path)
        if manifest.model_id in self.models:
            raise ConfigError(f"model {manifest.model_id!r} is served twice; give each manifest its own model_id")
        return path, manifest

    def handle(self, model_id: str) -> Any:
        """The Serve handle of a deployed model."""
        from ray import serve

        from robot_stack.fleet.app import DEPLOYMENT

        return serve.get_deployment_handle(DEPLOYMENT, app_name=model_id)

    def replicas(self, model_id: str, n: int, timeout_s: float = 120.0) -> dict[str, dict[str, Any]]:
        """Replica id -> ``{"pid", "node", "model"}`` of ``n`` distinct running replicas of ``model_id``, asked
        through the handle (Serve picks a replica per call, so it asks until ``n`` have answered).

        Raises:
            ConfigError: fewer than ``n`` replicas answered within ``timeout_s``.
        """
        handle = self.handle(model_id)
        found: dict[str, dict[str, Any]] = {}
        t_end = time.monotonic() + timeout_s
        while len(found) < n and time.monotonic() < t_end:
            info = handle.info.remote().result(timeout_s=max(1.0, t_end - time.monotonic()))
            found[info["replica"]] = {k: v for k, v in info.items() if k != "replica"}
        if len(found) < n:
            raise ConfigError(f"only {len(found)} of {n} replicas of {model_id} answered within {timeout_s:.0f} s")
        return found

    def replica_states(self) -> dict[str, dict[str, int]]:
        """Model id -> replica state -> count (``RUNNING``, ``STARTING``...); a call to Serve's controller."""
        from ray import serve

        from robot_stack.fleet.app import DEPLOYMENT

        out: dict[str, dict[str, int]] = {}
        with self.lock:
            apps = serve.status().applications
        for model_id in self.models:
            app = apps.get(model_id)
            dep = app.deployments.get(DEPLOYMENT) if app is not None else None
            out[model_id] = {str(k): int(v) for k, v in (dep.replica_states if dep else {}).items()}
        return out

    def close(self) -> None:
        """Delete the deployed applications; stop Serve and Ray if this process started them. Idempotent."""
        if self._closed:
            return
        self._closed = True
        ray = _ray()
        if not ray.is_initialized():
            return
        from ray import serve

        try:
            if self.started:
                serve.shutdown()
            else:
                for model in self.models.values():
                    if not model.attached:
                        serve.delete(model.model_id, _blocking=True)
        except Exception:
            log.warning("Serve did not shut down cleanly", exc_info=True)
        finally:
            ray.shutdown()
            log.info("left the Ray cluster%s", " (and stopped the instance this process started)" * self.started)


def deployment_options(config: FleetConfig, max_batch: int) -> dict[str, Any]:
    """Serve deployment options of one model's replicas: resources, and a fixed count or autoscaling (on ongoing
    requests, one micro-batch per replica as the target; scale up after 2 s, down after 30 s)."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica},
    }
    if config.autoscale is not None:
        lo, hi = config.autoscale
        options["autoscaling_config"] = {
            "min_replicas": lo,
            "max_replicas": hi,
            "initial_replicas": max(lo, 1),
            "target_ongoing_requests": max_batch,
            "upscale_delay_s": 2.0,
            "downscale_delay_s": 30.0,
        }
    else:
        options["num_replicas"] = config.replicas
    return options


def connect(config: FleetConfig, runtime_env: Mapping[str, Any] | None = None) -> RayCluster:
    """Join ``config.address``, or start a private loopback-only instance when it is None; start Serve (no HTTP).

    ``runtime_env``: passed to ``ray.init`` (e.g. ``{"env_vars": {...}}``); the working directory of this process
    is put on the replicas' ``PYTHONPATH`` so that they import the same ``robot_stack``.

    Raises:
        ConfigError: Ray is missing, or the cluster cannot be reached / started.
    """
    ray = _ray()
    if ray.is_initialized():
        raise ConfigError("this process is already connected to Ray; close the other fleet first")
    env = dict(runtime_env or {})
    env_vars = {**dict(env.get("env_vars", {})), **_pythonpath_env()}
    env["env_vars"] = env_vars
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "runtime_env": env,
        "configure_logging": False,
    }
    try:
        if config.address is None:
            _single_machine_mode(ray)
            ray.init(address="local", num_cpus=config.num_cpus, **kwargs)
        else:
            ray.init(address=config.address, **kwargs)
    except Exception as exc:
        where = config.address or "a local instance"
        raise ConfigError(
            f"cannot connect to Ray at {where}: {exc}. Start the head with `ray start --head` (docs/fleet.md) "
            "or drop --address to run a private local instance"
        ) from exc
    cluster = RayCluster(started=config.address is None, address=config.address)
    try:
        from ray import serve

        logging.getLogger("ray.serve").setLevel(logging.ERROR)
        serve.start(proxy_location="Disabled")
    except Exception as exc:
        cluster.close()
        raise ConfigError(f"cannot start Ray Serve: {exc}") from exc
    return cluster


def _single_machine_mode(ray: Any) -> None:
    """Make the instance this process starts listen on loopback only: Ray's single-machine mode, read by this
    process at call time and by every Ray process it spawns from the environment."""
    from ray._private import ray_constants

    os.environ[_SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    mode = os.environ.get("RAY_AUTH_MODE")  # unset: Ray turns token authentication on for a new local instance
    if mode is not None and mode.lower() != "token":
        log.warning("RAY_AUTH_MODE=%s: the local Ray instance runs without token authentication", mode)


_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _pythonpath_env() -> dict[str, str]:
    """Replicas import the same ``robot_stack`` as this process (a source checkout, not only an install)."""
    import robot_stack

    root = str(Path(robot_stack.__file__).resolve().parent.parent)
    parts = [root, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(parts))}
