"""One replica of a served model: a Ray Serve deployment running :class:`~robot_stack.policy.service.PolicyService`.

Each replica loads the model from its manifest path (the model files must be at that path on every node that may
host a replica: baked into the image or on a shared volume, docs/fleet.md) and refuses to start if the files
differ from the ingress's (SHA-256 of the manifest and its ONNX graph), so a stale copy on one node can never
answer for the model. The ingress sends requests in chunks (those it dispatched together, up to ``max_batch``: one
Ray call per chunk, not per robot); the replica micro-batches the chunks that arrive within ``batch_wait_ms`` of
the first (``@serve.batch``) and runs them in model calls of up to ``max_batch`` requests on a worker thread while
its event loop gathers the next batch. A request whose budget ran out while it waited in the replica is answered
``deadline_exceeded`` without running the model.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray import serve

from robot_stack.errors import ConfigError, PolicyError
from robot_stack.fleet.messages import ReplicaAnswer, ReplicaRequest
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.transport.server import BatchItem

__all__ = ["PolicyReplica", "model_digest"]

log = logging.getLogger("robot_stack.fleet.replica")


def model_digest(manifest_path: str | Path) -> str:
    """SHA-256 (hex) over the manifest YAML and the ONNX graph it names: the identity of a model's files."""
    manifest = PolicyManifest.load(manifest_path)
    digest = hashlib.sha256()
    paths = [Path(manifest.source or manifest_path), manifest.onnx_path]
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class PolicyReplica:
    """The deployment class (wrapped by ``serve.deployment`` in :mod:`robot_stack.fleet.cluster`).

    Args:
        manifest_path: absolute path of the model manifest on the replica's node.
        digest: :func:`model_digest` of the ingress's copy; a mismatch refuses to start (:class:`ConfigError`).
        provider, engine, precision, threads: as for ``robot-stack serve``.
        max_batch: micro-batch size; batch_wait_ms: how long a batch may wait to fill.
    """

    def __init__(
        self,
        manifest_path: str,
        digest: str,
        provider: str | None,
        engine: str,
        precision: str | None,
        threads: int | None,
        max_batch: int,
        batch_wait_ms: float,
    ) -> None:
        from robot_stack.policy.service import PolicyService

        _keep_replica_grpc_on_loopback()
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not Path(manifest_path).is_file():
            raise ConfigError(
                f"model manifest {manifest_path} is missing on node {socket.gethostname()}; every node that hosts "
                f"replicas needs the model files at the same path (image or shared volume, docs/fleet.md)"
            )
        have = model_digest(manifest_path)
        if have != digest:
            raise ConfigError(
                f"model files at {manifest_path} on node {socket.gethostname()} differ from the ingress's "
                f"(sha256 {have[:12]} vs {digest[:12]}); sync the model to every node"
            )
        manifest = PolicyManifest.load(manifest_path)
        self.service = PolicyService.from_manifest(
            manifest, provider, threads=threads, engine=engine, precision=precision
        )
        self.service.max_batch = max_batch
        self.service.warmup()
        self.model_id = manifest.model_id
        try:
            self.replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside Serve (a unit test constructing the class directly)
            self.replica_id = f"local-{os.getpid()}"
        self.node = socket.gethostname()
        self._gather.set_max_batch_size(max_batch)
        self._gather.set_batch_wait_timeout_s(batch_wait_ms / 1e3)
        log.info(
            "replica %s of %s ready (pid %d, max_batch %d)", self.replica_id, self.model_id, os.getpid(), max_batch
        )

    def info(self) -> dict[str, Any]:
        """Replica id, pid and node (tests and the bench use it to find a replica's process)."""
        return {"replica": self.replica_id, "pid": os.getpid(), "node": self.node, "model": self.model_id}

    def check_health(self) -> None:
        """Serve's periodic health check: a replica whose model is gone is replaced."""
        if self.service is None:
            raise PolicyError("replica has no model loaded")

    async def __call__(self, requests: Sequence[ReplicaRequest]) -> list[ReplicaAnswer]:
        """Answer a chunk of requests (the ingress sends up to a micro-batch per call), in order."""
        now = time.monotonic_ns()
        return await self._gather([(r, now + int(r.budget_ns)) for r in requests])

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def _gather(self, chunks: list[list[tuple[ReplicaRequest, int]]]) -> list[list[ReplicaAnswer]]:
        """Micro-batch the chunks that arrived together: run them in model calls of up to ``max_batch``
        requests, hand each chunk its answers."""
        jobs = [job for chunk in chunks for job in chunk]
        answers: list[ReplicaAnswer] = []
        for start in range(0, len(jobs), self.service.max_batch):
            answers += await self._run(jobs[start : start + self.service.max_batch])
        out, start = [], 0
        for chunk in chunks:
            out.append(answers[start : start + len(chunk)])
            start += len(chunk)
        return out

    async def _run(self, jobs: list[tuple[ReplicaRequest, int]]) -> list[ReplicaAnswer]:
        now = time.monotonic_ns()
        answers: list[ReplicaAnswer | None] = [None] * len(jobs)
        live: list[int] = []
        for i, (req, deadline_ns) in enumerate(jobs):
            if now > deadline_ns:
                answers[i] = ReplicaAnswer(
                    error_code="deadline_exceeded",
                    error=f"request {req.request_id} ran out of its budget waiting in replica {self.replica_id}; "
                    "dropped without running the model",
                    replica=self.replica_id,
                )
            else:
                live.append(i)
        if live:
            items = [
                BatchItem(req.robot, req.arrays, req.meta, req.request_id, None, req.client, self.model_id)
                for req, _ in (jobs[i] for i in live)
            ]
            t0 = time.monotonic_ns()
            results = await asyncio.get_running_loop().run_in_executor(None, self.service.run_batch, items)
            infer_ms = (time.monotonic_ns() - t0) / 1e6
            for i, result in zip(live, results, strict=True):
                answers[i] = _answer(result, self.replica_id, len(live), infer_ms)
        return [a for a in answers if a is not None]


def _keep_replica_grpc_on_loopback() -> None:
    """Ray Serve 2.60 binds every replica's inter-deployment gRPC server on all interfaces (``[::]:0``), even in
    Ray's single-machine mode. The fleet never uses that server (the ingress reaches replicas through Ray actor
    calls), so in single-machine mode -- the private loopback instance of :func:`robot_stack.fleet.cluster.connect`
    -- it is bound to 127.0.0.1 instead. Runs in the replica's constructor, before Serve starts that server; on a
    multi-node cluster nothing changes (replicas there must be reachable from other nodes)."""
    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        return
    from ray.serve._private import replica as serve_replica

    original = serve_replica.add_port_to_grpc_server
    if getattr(original, "loopback_only", False):
        return

    def loopback(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    loopback.loopback_only = True  # type: ignore[attr-defined]
    serve_replica.add_port_to_grpc_server = loopback


def _answer(result: Any, replica: str, batch: int, infer_ms: float) -> ReplicaAnswer:
    if isinstance(result, BaseException):
        code = "policy_error" if isinstance(result, PolicyError) else "handler_error"
        text = str(result) if code == "policy_error" else f"{type(result).__name__}: {result}"
        return ReplicaAnswer(error_code=code, error=text, replica=replica, batch=batch, infer_ms=infer_ms)
    arrays, meta = result
    return ReplicaAnswer(
        arrays={k: v for k, v in arrays.items()},
        meta=dict(meta),
        replica=replica,
        batch=batch,
        infer_ms=infer_ms,
    )
