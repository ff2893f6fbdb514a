"""The ingress's handler: forwards admitted requests to the model's Ray Serve deployment.

:class:`FleetDispatcher` is a *dispatch handler* of :class:`~robot_stack.transport.server.PolicyServer` (see
:data:`~robot_stack.transport.server.DispatchHandler`): the server keeps its protocol, CURVE, payload caps,
admission (latest wins, queue caps, rejection budget) and health; its worker hands this dispatcher requests
**earliest deadline first**, and only as many as the fleet has room for (the sum over models of replicas x
requests a replica holds), so the fleet-wide queue stays in the server, ordered by deadline, where a request
whose deadline passes is answered ``deadline_exceeded`` without ever being dispatched.

Each request is sent to its model's deployment (``model_id`` of the request, :class:`ModelRoute` per model);
requests go in chunks of up to a micro-batch, one Ray call per chunk (Ray's per-call cost, milliseconds of
Python on each side, is then paid once per chunk, not per robot): a request waits up to ``batch_wait_ms`` for
company only while its model already has a call in flight, so a lone robot never waits. Serve picks a replica
(power of two choices on queue length), where chunks are micro-batched again. If the replica fails
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
from dataclasses import dataclass
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
#: How long :meth:`FleetDispatcher.close` waits for the dispatch loop's tasks and thread, s.
CLOSE_TIMEOUT_S = 5.0


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
        self._buffers: dict[str, list[_Pending]] = {}  # event-loop state: requests waiting for company, per model
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._calls: dict[str, int] = {}  # Ray calls in flight per model
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
        """Queue the items for their models' deployments (see :meth:`_enqueue` for how they are chunked);
        ``done(i, result)`` is called once per item."""
        with self._slots:
            self._free -= len(items)
        by_model: dict[str, list[_Pending]] = {}
        for i, item in enumerate(items):
            by_model.setdefault(item.model or self.model_id, []).append(_Pending(i, item, done))
        for model, entries in by_model.items():
            self._loop.call_soon_threadsafe(self._enqueue, model, entries)

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

    def calls_in_flight(self, model_id: str) -> int:
        """Ray calls to ``model_id``'s replicas sent and not answered yet (each carries up to a micro-batch)."""
        return int(self._calls.get(model_id, 0))

    def close(self) -> None:
        """Stop the dispatch loop (in-flight requests are abandoned: the server is closed first): every task on it
        (the status poll, Ray calls in flight) is cancelled and awaited, then the loop is stopped and closed, so
        that no pending task is left for the garbage collector ("Task was destroyed but it is pending")."""
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._cancel_tasks(), self._loop).result(CLOSE_TIMEOUT_S)
        except Exception:  # a task that ignores cancellation: stop anyway, the thread is a daemon
            log.warning("fleet dispatcher: tasks still running at close", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` stopped and closed the dispatch loop."""
        return self._loop.is_closed()

    async def _cancel_tasks(self) -> None:
        """Cancel every other task of the dispatch loop and the batching timers, and wait for the tasks to end."""
        for timer in self._timers.values():
            timer.cancel()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def stats(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._counts)

    # --------------------------------------------------------------------------------------------- internals
    def _route(self, model: DeployedModel) -> ModelRoute:
        manifest = PolicyManifest.load(model.manifest_path)
        accepts_rtc = bool(manifest.sampler is not None and manifest.sampler.rtc)  # flow_matching: or vla:

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

    def _enqueue(self, model: str, entries: list[_Pending]) -> None:
        """(Event loop.) Chunk a model's requests: a full micro-batch goes at once; so does whatever is waiting
        when the model has no call in flight (a lone robot never waits); otherwise requests wait up to
        ``batch_wait_ms`` for company, in deadline order, so that a busy fleet pays Ray's per-call cost once per
        chunk instead of once per robot."""
        buffer = self._buffers.setdefault(model, [])
        buffer.extend(entries)
        buffer.sort(key=_Pending.edf_key)
        size = self.cluster.models[model].max_batch
        while len(buffer) >= size:
            self._send(model, buffer[:size])
            del buffer[:size]
        if buffer and not self._calls.get(model):
            self._send(model, buffer[:])
            buffer.clear()
        if buffer and model not in self._timers:
            self._timers[model] = self._loop.call_later(self.config.batch_wait_ms / 1e3, self._flush, model)

    def _flush(self, model: str) -> None:
        self._timers.pop(model, None)
        buffer = self._buffers.get(model)
        if buffer:
            self._send(model, buffer[:])
            buffer.clear()

    def _send(self, model: str, chunk: list[_Pending]) -> None:
        self._calls[model] = self._calls.get(model, 0) + 1
        with self._counts_lock:
            self._counts["calls"] += 1
            self._counts["requests"] += len(chunk)
        self._loop.create_task(self._serve(model, chunk))

    async def _serve(self, model: str, chunk: list[_Pending]) -> None:
        try:
            results = await self._forward(model, [p.item for p in chunk])
        except Exception as exc:  # never leave a robot without an answer
            log.exception("fleet dispatch failed for %d request(s) of model %s", len(chunk), model)
            results = [exc] * len(chunk)
        finally:
            self._calls[model] -= 1
            self._release(len(chunk))
            if not self._calls[model]:
                self._flush(model)  # the model is idle: what waits for company goes now
        for pending, result in zip(chunk, results, strict=True):
            pending.done(pending.index, result)

    async def _forward(self, model: str, chunk: list[BatchItem]) -> list[Result]:
        """Send ``chunk`` to a replica in one call; what a failed replica left unanswered goes again, to another
        replica, while its time lasts. Returns one result per item, in order."""
        handle = self._handles[model]
        now = time.monotonic_ns()
        no_deadline = now + round(self.config.no_deadline_s * 1e9)
        deadlines = {
            i: item.deadline_ns if item.deadline_ns is not None else no_deadline for i, item in enumerate(chunk)
        }
        pending = dict(enumerate(chunk))
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
        return [results[i] for i in range(len(chunk))]

    async def _poll_status(self) -> None:
        while True:
            try:
                self._replica_states = await asyncio.to_thread(self.cluster.replica_states)
            except Exception:
                log.debug("could not read replica states", exc_info=True)
            await asyncio.sleep(STATUS_PERIOD_S)


@dataclass(frozen=True)
class _Pending:
    """A request handed over by the server, waiting to be sent: its index in the hand-over and its ``done``."""

    index: int
    item: BatchItem
    done: Callable[[int, Result], None]

    def edf_key(self) -> float:
        return float("inf") if self.item.deadline_ns is None else float(self.item.deadline_ns)


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
