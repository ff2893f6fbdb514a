"""The ingress's handler: forwards admitted requests to the model's Ray Serve deployment.

:class:`FleetDispatcher` is a *dispatch handler* of :class:`~robot_stack.transport.server.PolicyServer` (see
:data:`~robot_stack.transport.server.DispatchHandler`): the server keeps its protocol, CURVE, payload caps,
admission (latest wins, queue caps, rejection budget) and health; its worker hands this dispatcher requests
**earliest deadline first**, and only as many as the fleet has room for (the sum over models of replicas x
requests a replica holds), so the fleet-wide queue stays in the server, ordered by deadline, where a request
whose deadline passes is answered ``deadline_exceeded`` without ever being dispatched.

Each request is sent to its model's deployment (``model_id`` of the request, :class:`ModelRoute` per model);
requests handed over together go in chunks of up to a micro-batch, one Ray call per chunk (Ray's per-call cost,
a few milliseconds of Python on each side, is paid once per chunk, not per robot); Serve picks a replica (power
of two choices on queue length), where chunks are micro-batched. If the replica fails
(its process or node dies, it is unreachable), the request is sent again -- Serve then routes around the dead
replica -- until it is answered or its deadline passes; then the robot gets ``deadline_exceeded``. Errors of the
model itself (``policy_error``) are not retried.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from robot_stack.errors import ConfigError, PolicyError, RequestTimeoutError, RobotStackError
from robot_stack.fleet.cluster import DeployedModel, RayCluster
from robot_stack.fleet.config import FleetConfig
from robot_stack.fleet.messages import ReplicaAnswer, ReplicaRequest
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.policy.service import check_declared
from robot_stack.transport.protocol import ArraySpec
from robot_stack.transport.server import BatchItem, ModelRoute, Result

__all__ = ["FleetDispatcher", "replica_failures"]

log = logging.getLogger("robot_stack.fleet.dispatcher")

#: How often the replica states in ``health`` are refreshed (a call to Serve's controller), s.
STATUS_PERIOD_S = 1.0


def replica_failures() -> tuple[type[BaseException], ...]:
    """Ray exceptions that mean "the replica (or its node) failed", not "the model refused": worth a retry."""
    import ray.exceptions as rex

    names = ("RayActorError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError")
    return tuple(getattr(rex, n) for n in names if hasattr(rex, n))


class FleetDispatcher:
    """Serve every deployed model of ``cluster`` through one :class:`PolicyServer`.

    Args:
        cluster: the Ray connection with the models deployed (:meth:`RayCluster.deploy` / ``attach``).
        config: the fleet settings (retry backoff, the limit of requests without a deadline).
        model_ids: the models to serve, the first the default (None = every model of ``cluster``).

    Attributes:
        routes: model id -> :class:`ModelRoute` (first = the default for requests naming no model).
        capacity: requests in flight at most (all models).
        retries: requests sent again after a replica failure; failed_over: of those, answered by another replica.
    """

    def __init__(self, cluster: RayCluster, config: FleetConfig, model_ids: Sequence[str] | None = None) -> None:
        ids = list(cluster.models if model_ids is None else model_ids)
        if not ids:
            raise ConfigError("no model deployed; deploy at least one before serving")
        unknown = [m for m in ids if m not in cluster.models]
        if unknown:
            raise ConfigError(f"models {unknown} are not deployed on the cluster (deployed: {list(cluster.models)})")
        models = {m: cluster.models[m] for m in ids}
        self.cluster = cluster
        self.config = config
        self.model_id = ids[0]
        self._handles = {m: cluster.handle(m) for m in models}
        self.routes: dict[str, ModelRoute] = {m: self._route(d) for m, d in models.items()}
        self.capacity = sum(d.capacity for d in models.values())
        self._free = self.capacity
        self._slots = threading.Condition()
        self._counts: collections.Counter[str] = collections.Counter()
        self._counts_lock = threading.Lock()
        self._replica_states: dict[str, dict[str, int]] = {}
        self._retryable = replica_failures()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fleet-dispatch", daemon=True)
        self._thread.start()
        self._status_task = asyncio.run_coroutine_threadsafe(self._poll_status(), self._loop)

    # ---------------------------------------------------------------------------------------- server hooks
    def free_slots(self, timeout_s: float) -> int:
        """Requests the fleet can take now; waits up to ``timeout_s`` for one to free up (0 = none)."""
        with self._slots:
            if self._free <= 0:
                self._slots.wait(timeout_s)
            return max(0, self._free)

    def dispatch(self, items: Sequence[BatchItem], done: Callable[[int, Result], None]) -> None:
        """Send the items to their models' deployments, in chunks of up to a micro-batch per model (one Ray call
        each; items keep the server's deadline order); ``done(i, result)`` is called once per item."""
        with self._slots:
            self._free -= len(items)
        by_model: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_model.setdefault(item.model or self.model_id, []).append(i)
        for model, indices in by_model.items():
            size = self.cluster.models[model].max_batch
            for start in range(0, len(indices), size):
                chunk = [(i, items[i]) for i in indices[start : start + size]]
                asyncio.run_coroutine_threadsafe(self._serve(model, chunk, done), self._loop)

    def health(self) -> dict[str, Any]:
        """Fleet figures for the server's ``health`` reply (cached replica states, in flight, retries)."""
        with self._counts_lock:
            counts = dict(self._counts)
        with self._slots:
            in_flight = self.capacity - self._free
        return {
            "fleet": {
                "replicas": dict(self._replica_states),
                "in_flight": in_flight,
                "capacity": self.capacity,
                **counts,
            }
        }

    def close(self) -> None:
        """Stop the dispatch loop (in-flight requests are abandoned: the server is closed first)."""
        self._status_task.cancel()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)

    @property
    def stats(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._counts)

    # --------------------------------------------------------------------------------------------- internals
    def _route(self, model: DeployedModel) -> ModelRoute:
        manifest = PolicyManifest.load(model.manifest_path)
        accepts_rtc = bool(manifest.flow_matching is not None and manifest.flow_matching.rtc)

        def check(specs: Sequence[ArraySpec]) -> None:
            check_declared(manifest, specs, accepts_rtc)

        def metadata() -> dict[str, Any]:
            states = self._replica_states.get(model.model_id, {})
            return {
                **manifest.summary(),
                "provider": "ray-serve",
                "fleet": {"replicas": states, "max_batch": model.max_batch, "max_replicas": model.max_replicas},
            }

        return ModelRoute(model.model_id, dict(manifest.compression), check, metadata)

    def _count(self, key: str) -> None:
        with self._counts_lock:
            self._counts[key] += 1

    def _release(self, n: int) -> None:
        with self._slots:
            self._free += n
            self._slots.notify()

    async def _serve(self, model: str, chunk: list[tuple[int, BatchItem]], done: Callable[[int, Result], None]) -> None:
        results: dict[int, Result] = {}
        try:
            results = await self._forward(model, chunk)
        except Exception as exc:  # never leave a robot without an answer
            log.exception("fleet dispatch failed for %d request(s) of model %s", len(chunk), model)
            results = {i: exc for i, _ in chunk}
        finally:
            self._release(len(chunk))
        for i, _ in chunk:
            done(i, results[i])

    async def _forward(self, model: str, chunk: list[tuple[int, BatchItem]]) -> dict[int, Result]:
        """Send ``chunk`` to a replica in one call; what a failed replica left unanswered goes again, to another
        replica, while its time lasts. Returns item index -> result."""
        handle = self._handles[model]
        now = time.monotonic_ns()
        no_deadline = now + round(self.config.no_deadline_s * 1e9)
        deadlines = {i: item.deadline_ns if item.deadline_ns is not None else no_deadline for i, item in chunk}
        pending = dict(chunk)
        results: dict[int, Result] = {}
        backoff_s = self.config.retry_backoff_ms / 1e3
        attempt = 0
        failures: list[str] = []
        while pending:
            now = time.monotonic_ns()
            for i in [i for i in pending if deadlines[i] <= now]:
                item = pending.pop(i)
                self._count("deadline_in_fleet")
                results[i] = RequestTimeoutError(
                    f"request {item.request_id} of robot {item.robot!r} ran out of time in the fleet"
                    + (f" after {attempt} failed replica(s) ({'; '.join(failures[-2:])})" if failures else "")
                    + "; the robot should hold and send a fresh observation"
                )
            if not pending:
                break
            order = list(pending)
            requests = [
                ReplicaRequest(it.robot, it.client, it.request_id, it.arrays, it.meta, deadlines[i] - now, attempt)
                for i, it in pending.items()
            ]
            response = handle.remote(requests)
            try:
                wait_s = (max(deadlines[i] for i in order) - now) / 1e9
                answers: list[ReplicaAnswer] = await asyncio.wait_for(_awaitable(response), wait_s)
            except asyncio.TimeoutError:
                response.cancel()
                continue  # every pending item is past its deadline now: answered at the top of the loop
            except self._retryable as exc:
                attempt += 1
                self._count("retries")
                failures.append(type(exc).__name__)
                log.warning(
                    "replica failed on %d request(s) of model %s (%s); retrying on another (attempt %d)",
                    len(order),
                    model,
                    type(exc).__name__,
                    attempt,
                )
                await asyncio.sleep(min(backoff_s * 2 ** (attempt - 1), 0.1))
                continue
            for i, answer in zip(order, answers, strict=True):
                results[i] = _result(answer)
                if attempt:
                    self._count("failed_over")
            pending.clear()
        return results

    async def _poll_status(self) -> None:
        while True:
            try:
                self._replica_states = await asyncio.to_thread(self.cluster.replica_states)
            except Exception:
                log.debug("could not read replica states", exc_info=True)
            await asyncio.sleep(STATUS_PERIOD_S)


async def _awaitable(response: Any) -> Any:
    return await response


def _result(answer: ReplicaAnswer) -> Result:
    """A replica's answer -> what the server answers the robot."""
    if not answer.error_code:
        meta: Mapping[str, Any] = {
            **answer.meta,
            "fleet": {"replica": answer.replica, "batch": answer.batch, "replica_infer_ms": round(answer.infer_ms, 3)},
        }
        return dict(answer.arrays), meta
    if answer.error_code == "deadline_exceeded":
        return RequestTimeoutError(answer.error)
    if answer.error_code == "policy_error":
        return PolicyError(answer.error)
    return RobotStackError(answer.error)
