"""Policy server: a ZeroMQ ROUTER that validates requests and runs a handler on a worker thread.

Threads:

* the **I/O thread** owns the ROUTER socket. It receives, validates, answers ``health`` / ``metadata`` at once,
  queues ``infer`` work (latest-wins per robot id: a newer request from the same robot replaces a queued older
  one, which is answered ``superseded``) and sends every reply;
* the **worker thread** takes queued work **earliest deadline first** (requests without a deadline after those
  with one, ties by arrival), drops work whose deadline has passed (``deadline_exceeded``), runs the handler and
  hands the encoded reply back to the I/O thread (a deque plus an inproc wake-up socket; ZeroMQ sockets never
  cross threads). If the handler has ``max_batch > 1`` and a ``run_batch(items)`` method, the worker takes up to
  ``max_batch`` queued requests (one per robot, by deadline) and runs them as one micro-batch; nothing waits for
  a batch to fill, so a lone robot never pays for batching.

Per-client latency (queue, inference, total = receipt to reply, all server clock) is kept for the last
:data:`CLIENT_WINDOW` requests of each of at most :data:`MAX_TRACKED_CLIENTS` robot ids and reported by
:meth:`PolicyServer.client_stats`, in :meth:`PolicyServer.stats` and in every ``health`` reply.

No input crashes the server: every failure becomes an ``error`` reply (when the sender can be addressed, which
with ROUTER is always) and a counter in :meth:`PolicyServer.stats`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import zmq

from robot_stack.errors import (
    ConfigError,
    PayloadTooLargeError,
    PolicyError,
    ProtocolError,
    RobotStackError,
    VersionMismatchError,
)
from robot_stack.metrics import StageTimes
from robot_stack.transport.codecs import available_codecs
from robot_stack.transport.protocol import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Message,
    decode,
    encode,
    salvage_request_id,
)

__all__ = ["BatchItem", "CLIENT_WINDOW", "MAX_TRACKED_CLIENTS", "BatchHandler", "Handler", "PolicyServer"]

log = logging.getLogger("robot_stack.transport.server")

#: ``handler(arrays, meta) -> (arrays, meta)``. Arrays are name -> ndarray (request arrays are read-only views).
#: A handler may also have ``model_id: str`` and ``metadata() -> dict`` attributes; the server uses them.
Handler = Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]]

#: Requests remembered per robot for the per-client percentiles; robot ids tracked at most (least recent evicted).
CLIENT_WINDOW = 1024
MAX_TRACKED_CLIENTS = 256


@dataclass(frozen=True)
class BatchItem:
    """One request handed to ``handler.run_batch``.

    Attributes:
        robot: the sender's robot id.
        arrays: name -> read-only request array.
        meta: the request's meta map.
        request_id: the client's request id.
        deadline_ns: server monotonic clock, ns; None = no deadline.
    """

    robot: str
    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, Any]
    request_id: int
    deadline_ns: int | None


#: ``run_batch(items) -> results``: one result per item, in order: ``(arrays, meta)`` or the exception for that
#: item (a :class:`PolicyError` becomes ``policy_error``, anything else ``handler_error``).
BatchHandler = Callable[[Sequence[BatchItem]], list[tuple[Mapping[str, np.ndarray], Mapping[str, Any]] | BaseException]]

_COUNTERS = (
    "received",
    "replied",
    "infer_ok",
    "health",
    "metadata",
    "protocol_error",
    "payload_too_large",
    "version_mismatch",
    "model_mismatch",
    "bad_kind",
    "deadline_exceeded",
    "superseded",
    "policy_error",
    "handler_error",
    "internal_error",
    "auth_rejected",
    "batches",
)


@dataclass
class _Work:
    envelope: list[Any]  # routing id (+ empty delimiter for REQ peers)
    request: Message
    t_recv_ns: int
    deadline_ns: int | None

    def edf_key(self) -> tuple[float, int]:
        """Earliest deadline first; no deadline sorts last; ties by arrival."""
        return (self.deadline_ns if self.deadline_ns is not None else float("inf"), self.t_recv_ns)


class PolicyServer:
    """Serve ``handler`` on a ROUTER socket.

    Args:
        handler: ``handler(arrays, meta) -> (arrays, meta)``; raising :class:`PolicyError` gives an error reply
            with code ``policy_error``, any other exception ``handler_error``. Optional attributes: ``model_id``,
            ``metadata() -> dict``, and for micro-batching ``max_batch: int`` with ``run_batch`` (see
            :data:`BatchHandler`), which the server then calls instead (also for single requests).
        bind: ZeroMQ endpoint. Binds localhost by default; ``tcp://0.0.0.0:5555`` exposes it (then use CURVE).
            ``tcp://127.0.0.1:*`` picks a free port (see :attr:`endpoint`).
        max_message_bytes: cap on the declared array bytes of one request; also sets ``ZMQ_MAXMSGSIZE`` so that
            libzmq itself disconnects a peer that sends a larger frame.
        model_id: reported in health/metadata and checked against a request's ``model`` field (defaults to
            ``handler.model_id`` if present). A request naming another model is rejected (``model_mismatch``).
        curve_secret_key: z85 server secret key; enables CURVE encryption (clients must know the public key).
        authorized_client_keys: z85 client public keys allowed to connect (needs ``curve_secret_key``); None =
            any client that knows the server key. A mapping key -> name also names them in the logs. Refused
            handshakes are counted as ``auth_rejected``.
        heartbeat_ms: ZMTP heartbeat interval; a peer silent for 3 intervals is dropped.
        context: ZeroMQ context (default: the process-wide instance).
    """

    def __init__(
        self,
        handler: Handler,
        bind: str = "tcp://127.0.0.1:5555",
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        model_id: str | None = None,
        curve_secret_key: bytes | None = None,
        authorized_client_keys: Iterable[bytes] | None = None,
        heartbeat_ms: int = 1000,
        context: zmq.Context | None = None,
    ) -> None:
        if max_message_bytes <= 0 or max_header_bytes <= 0:
            raise ConfigError("max_message_bytes and max_header_bytes must be positive byte counts")
        self._handler = handler
        self.max_message_bytes = int(max_message_bytes)
        self.max_header_bytes = int(max_header_bytes)
        self.model_id = model_id if model_id is not None else str(getattr(handler, "model_id", ""))
        self._ctx = context or zmq.Context.instance()
        self._auth: Any = None
        self._counts: collections.Counter[str] = collections.Counter({k: 0 for k in _COUNTERS})
        self._counts_lock = threading.Lock()
        self._pending: dict[str, _Work] = {}
        self._run_batch = getattr(handler, "run_batch", None)
        self.max_batch = max(1, int(getattr(handler, "max_batch", 1))) if callable(self._run_batch) else 1
        self._client_times: collections.OrderedDict[str, tuple[StageTimes, collections.deque[int]]] = (
            collections.OrderedDict()
        )
        self._client_lock = threading.Lock()
        self._cond = threading.Condition()
        self._outbox: collections.deque[list[Any]] = collections.deque()
        self._stop = threading.Event()
        self._closed = False
        self._t_start_ns = time.monotonic_ns()
        self._wake_addr = f"inproc://robot-stack-server-wake-{id(self)}-{time.monotonic_ns()}"

        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, max(self.max_message_bytes, self.max_header_bytes))
        sock.setsockopt(zmq.RCVHWM, 100)
        sock.setsockopt(zmq.SNDHWM, 100)
        sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * heartbeat_ms)
        if curve_secret_key is not None:
            if not zmq.has("curve"):
                raise ConfigError("CURVE requested but this libzmq has no CURVE support; install a pyzmq wheel")
            if authorized_client_keys is not None:
                names = (
                    dict(authorized_client_keys)
                    if isinstance(authorized_client_keys, Mapping)
                    else {k: "" for k in authorized_client_keys}
                )
                self._start_authenticator(names)
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve_secret_key)
        elif authorized_client_keys is not None:
            raise ConfigError("authorized_client_keys needs curve_secret_key (client keys are checked by CURVE)")
        try:
            sock.bind(bind)
        except zmq.ZMQError as exc:
            sock.close(0)
            self._stop_authenticator()
            raise ConfigError(
                f"cannot bind policy server to {bind!r}: {exc}. Is another server running there? Pick another "
                f"port or use tcp://127.0.0.1:* for a free one."
            ) from exc
        self._sock = sock
        self.endpoint: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._wake_rx = self._ctx.socket(zmq.PAIR)
        self._wake_rx.setsockopt(zmq.LINGER, 0)
        self._wake_rx.bind(self._wake_addr)
        self._io_thread = threading.Thread(target=self._io_loop, name="policy-server-io", daemon=True)
        self._worker_thread = threading.Thread(target=self._work_loop, name="policy-server-worker", daemon=True)
        self._started = False
        log.info("policy server bound to %s (model %r, cap %d bytes)", self.endpoint, self.model_id, max_message_bytes)

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> PolicyServer:
        """Start the I/O and worker threads (idempotent); return self."""
        if self._closed:
            raise ConfigError("this PolicyServer was closed; create a new one")
        if not self._started:
            self._started = True
            self._io_thread.start()
            self._worker_thread.start()
        return self

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop both threads, close the sockets. Idempotent. Queued requests are dropped unanswered."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._started:
            self._worker_thread.join(timeout_s)
            self._io_thread.join(timeout_s)
        if not self._started or not self._io_thread.is_alive():
            self._sock.close(0)
            self._wake_rx.close(0)
        self._stop_authenticator()
        log.info("policy server on %s closed; stats %s", self.endpoint, self.stats())

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Counters (received, replied, infer_ok, health, metadata, batches, auth_rejected, one per error code),
        ``queued``, and ``clients`` (see :meth:`client_stats`). Thread-safe copy."""
        with self._counts_lock:
            out: dict[str, Any] = dict(self._counts)
        with self._cond:
            out["queued"] = len(self._pending)
        out["clients"] = self.client_stats()
        return out

    def client_stats(self) -> dict[str, dict[str, float]]:
        """Per robot id: ``n`` and p50/p99 of ``queue_ms``, ``infer_ms`` (the model call, whole batch) and
        ``total_ms`` (receipt to reply) over its last :data:`CLIENT_WINDOW` answered infer requests, plus
        ``batch_mean`` (mean micro-batch size its requests ran in)."""
        with self._client_lock:
            summaries = {robot: (t.summary(), sum(b) / max(1, len(b))) for robot, (t, b) in self._client_times.items()}
        out: dict[str, dict[str, float]] = {}
        for robot, (summary, batch_mean) in summaries.items():
            entry: dict[str, float] = {"n": summary["total"]["n"]}
            for stage in ("queue", "infer", "total"):
                entry[f"{stage}_p50_ms"] = round(summary[stage]["p50_ms"], 4)
                entry[f"{stage}_p99_ms"] = round(summary[stage]["p99_ms"], 4)
            entry["batch_mean"] = round(batch_mean, 3)
            out[robot] = entry
        return out

    def _record_client(self, robot: str, queue_ms: float, infer_ms: float, total_ms: float, batch: int) -> None:
        with self._client_lock:
            entry = self._client_times.pop(robot, None)
            if entry is None:
                entry = (StageTimes(maxlen=CLIENT_WINDOW), collections.deque(maxlen=CLIENT_WINDOW))
                while len(self._client_times) >= MAX_TRACKED_CLIENTS:
                    self._client_times.popitem(last=False)
            self._client_times[robot] = entry
            times, batches = entry
            times.add("queue", queue_ms / 1e3)
            times.add("infer", infer_ms / 1e3)
            times.add("total", total_ms / 1e3)
            batches.append(batch)

    # --------------------------------------------------------------------------------------------- CURVE
    def _start_authenticator(self, allowed: Mapping[bytes, str]) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        server = self

        class _Allow:
            def callback(self, domain: str, key: bytes) -> bool:
                ok = key in allowed
                if not ok:
                    server._count("auth_rejected")
                    log.warning("rejected CURVE client key %r (not in the allow-list)", key)
                elif allowed[key]:
                    log.debug("CURVE client %r admitted", allowed[key])
                return ok

        self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("robot_stack.transport.auth"))
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=_Allow())

    def _stop_authenticator(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    # ---------------------------------------------------------------------------------------- I/O thread
    def _count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[key] += n

    def _error_frames(
        self,
        request_id: int,
        robot: str,
        code: str,
        reason: str,
        timing: dict | None,
        version: int = PROTOCOL_VERSION,
    ) -> list[Any]:
        self._count(code if code in _COUNTERS else "internal_error")
        msg = self._stamped("error", request_id, robot, version, {"code": code, "reason": reason}, timing)
        return encode(msg, self.max_message_bytes)

    def _stamped(
        self,
        kind: str,
        request_id: int,
        robot: str,
        version: int,
        meta: Mapping[str, Any],
        timing: dict | None,
        arrays: Mapping[str, Any] | None = None,
    ) -> Message:
        """A reply or error message stamped with the server's send time (``t_send_ns`` and ``t_reply_ns``)."""
        t_reply = time.monotonic_ns()
        return Message(
            kind=kind,
            id=request_id,
            robot=robot,
            model=self.model_id,
            t_send_ns=t_reply,
            arrays=arrays or {},
            meta=meta,
            timing=None if timing is None else {**timing, "t_reply_ns": t_reply},
            version=version,
        )

    def _io_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                try:
                    events = dict(poller.poll(100))
                    if self._wake_rx in events:
                        while self._wake_rx.poll(0):
                            self._wake_rx.recv()
                    while self._outbox:
                        self._send(self._outbox.popleft())
                    if self._sock in events:
                        for _ in range(64):  # bounded drain keeps replies flowing under a flood
                            try:
                                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                            except zmq.Again:
                                break
                            self._on_message_safe(frames)
                except Exception:  # the loop must survive anything
                    self._count("internal_error")
                    log.exception("policy server I/O loop error (continuing)")
        finally:
            self._sock.close(0)
            self._wake_rx.close(0)

    def _send(self, frames: list[Any]) -> None:
        try:
            self._sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
            self._count("replied")
        except zmq.Again:
            log.warning("reply dropped: client's send queue is full (HWM)")

    def _on_message_safe(self, frames: list[Any]) -> None:
        """:meth:`_on_message`, but a server bug still answers the sender (``internal_error``) and is counted."""
        try:
            self._on_message(frames, time.monotonic_ns())
        except Exception:
            log.exception("policy server failed on a message (answered internal_error, continuing)")
            try:
                self._send([frames[0]] + self._error_frames(-1, "", "internal_error", "server bug; see its log", None))
            except Exception:
                log.exception("could not even answer internal_error")

    def _on_message(self, frames: list[Any], t_recv_ns: int) -> None:
        self._count("received")
        envelope = [frames[0]]
        body = frames[1:]
        if len(body) >= 1 and len(body[0]) == 0:  # REQ peer: keep the empty delimiter in the envelope
            envelope.append(body[0])
            body = body[1:]
        if not body:
            self._send(envelope + self._error_frames(-1, "", "protocol_error", "empty message", None))
            return
        try:
            request = decode(body, self.max_message_bytes, self.max_header_bytes)
        except (PayloadTooLargeError, VersionMismatchError, ProtocolError) as exc:
            code = {PayloadTooLargeError: "payload_too_large", VersionMismatchError: "version_mismatch"}.get(
                type(exc), "protocol_error"
            )
            rid = salvage_request_id(body[0], self.max_header_bytes)
            log.debug("rejected message id %d: %s", rid, exc)
            self._send(envelope + self._error_frames(rid, "", code, str(exc), {"t_recv_ns": t_recv_ns}))
            return
        timing = {"t_client_send_ns": request.t_send_ns, "t_recv_ns": t_recv_ns}
        v = request.version
        if request.model and self.model_id and request.model != self.model_id:
            reason = f"request is for model {request.model!r} but this server serves {self.model_id!r}"
            self._send(envelope + self._error_frames(request.id, request.robot, "model_mismatch", reason, timing, v))
            return
        if request.kind == "infer":
            deadline = t_recv_ns + int(request.timeout_ms * 1e6) if request.timeout_ms > 0 else None
            work = _Work(envelope, request, t_recv_ns, deadline)
            with self._cond:
                old = self._pending.pop(request.robot, None)
                self._pending[request.robot] = work
                self._cond.notify()
            if old is not None:
                reason = f"superseded by newer request {request.id} from robot {request.robot!r} (latest wins)"
                old_req = old.request
                self._send(
                    old.envelope
                    + self._error_frames(old_req.id, old_req.robot, "superseded", reason, None, old_req.version)
                )
        elif request.kind in ("health", "metadata"):
            self._count(request.kind)
            if request.kind == "health":
                with self._cond:
                    queued = len(self._pending)
                meta: Mapping[str, Any] = {
                    "status": "ok",
                    "model": self.model_id,
                    "uptime_s": (time.monotonic_ns() - self._t_start_ns) / 1e9,
                    "queued": queued,
                    "max_batch": self.max_batch,
                    "clients": self.client_stats(),
                }
            else:
                meta = self._metadata()
            reply = self._stamped("reply", request.id, request.robot, v, meta, timing)
            self._send(envelope + encode(reply, self.max_message_bytes))
        else:
            reason = f"kind {request.kind!r} is not a request; send infer, health or metadata"
            self._send(envelope + self._error_frames(request.id, request.robot, "bad_kind", reason, timing, v))

    def _metadata(self) -> dict[str, Any]:
        fn = getattr(self._handler, "metadata", None)
        base: dict[str, Any] = {
            "model": self.model_id,
            "max_message_bytes": self.max_message_bytes,
            "max_batch": self.max_batch,
            "protocol_versions": list(SUPPORTED_VERSIONS),
            "codecs": list(available_codecs()),
        }
        if callable(fn):
            try:
                base.update(fn())
            except Exception:
                log.exception("handler.metadata() failed")
        return base

    # ------------------------------------------------------------------------------------- worker thread
    def _take_work(self) -> tuple[list[_Work], list[_Work]] | None:
        """Block until work is queued; return (runnable batch by EDF, expired work) or None on stop."""
        with self._cond:
            while not self._pending and not self._stop.is_set():
                self._cond.wait()
            if self._stop.is_set():
                return None
            now = time.monotonic_ns()
            batch: list[_Work] = []
            expired: list[_Work] = []
            for work in sorted(self._pending.values(), key=_Work.edf_key):
                if work.deadline_ns is not None and now > work.deadline_ns:
                    expired.append(work)
                elif len(batch) < self.max_batch:
                    batch.append(work)
                else:
                    continue
                del self._pending[work.request.robot]
            return batch, expired

    def _work_loop(self) -> None:
        wake = self._ctx.socket(zmq.PAIR)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(self._wake_addr)
        try:
            while True:
                taken = self._take_work()
                if taken is None:
                    return
                batch, expired = taken
                replies = [w.envelope + self._expired_frames(w) for w in expired]
                if batch:
                    try:
                        frames = self._process(batch)
                    except Exception:
                        log.exception("policy server worker error (continuing)")
                        frames = [
                            self._error_frames(w.request.id, w.request.robot, "internal_error", "internal", None)
                            for w in batch
                        ]
                    replies.extend(w.envelope + f for w, f in zip(batch, frames, strict=True))
                self._outbox.extend(replies)
                wake.send(b"", zmq.NOBLOCK)
        finally:
            wake.close(0)

    def _expired_frames(self, work: _Work) -> list[Any]:
        req = work.request
        now = time.monotonic_ns()
        timing = {
            "t_client_send_ns": req.t_send_ns,
            "t_recv_ns": work.t_recv_ns,
            "queue_ms": (now - work.t_recv_ns) / 1e6,
        }
        reason = (
            f"request {req.id} waited {(now - work.t_recv_ns) / 1e6:.1f} ms in the queue, beyond its "
            f"{req.timeout_ms:.1f} ms budget; dropped without running the model"
        )
        return self._error_frames(req.id, req.robot, "deadline_exceeded", reason, timing, req.version)

    def _call_handler(
        self, batch: list[_Work]
    ) -> list[tuple[Mapping[str, np.ndarray], Mapping[str, Any]] | BaseException]:
        """Run the handler on the batch; one result or exception per work item, in order."""
        if self._run_batch is not None:
            items = [
                BatchItem(w.request.robot, w.request.arrays, w.request.meta, w.request.id, w.deadline_ns) for w in batch
            ]
            try:
                results = list(self._run_batch(items))
            except Exception as exc:  # a batch-level failure fails every item of the batch
                log.exception("handler.run_batch raised for %d request(s)", len(batch))
                return [exc] * len(batch)
            if len(results) != len(batch):
                err = RuntimeError(f"handler.run_batch returned {len(results)} results for {len(batch)} requests")
                return [err] * len(batch)
            return results
        out: list[tuple[Mapping[str, np.ndarray], Mapping[str, Any]] | BaseException] = []
        for work in batch:
            try:
                out.append(self._handler(work.request.arrays, work.request.meta))
            except Exception as exc:
                if not isinstance(exc, RobotStackError):
                    log.exception("handler raised for request %d", work.request.id)
                out.append(exc)
        return out

    def _process(self, batch: list[_Work]) -> list[list[Any]]:
        """Run one (micro-)batch; return the encoded answer frames of each work item, in order."""
        t_start = time.monotonic_ns()
        results = self._call_handler(batch)
        t_end = time.monotonic_ns()
        if len(batch) > 1 or self._run_batch is not None:
            self._count("batches")
        out: list[list[Any]] = []
        for work, result in zip(batch, results, strict=True):
            req = work.request
            timing: dict[str, int | float] = {
                "t_client_send_ns": req.t_send_ns,
                "t_recv_ns": work.t_recv_ns,
                "t_start_ns": t_start,
                "queue_ms": (t_start - work.t_recv_ns) / 1e6,
                "t_end_ns": t_end,
                "infer_ms": (t_end - t_start) / 1e6,
                "batch": len(batch),
            }
            out.append(self._answer(work, result, timing))
            self._record_client(
                req.robot,
                float(timing["queue_ms"]),
                float(timing["infer_ms"]),
                (time.monotonic_ns() - work.t_recv_ns) / 1e6,
                len(batch),
            )
        return out

    def _answer(
        self,
        work: _Work,
        result: tuple[Mapping[str, np.ndarray], Mapping[str, Any]] | BaseException,
        timing: dict[str, int | float],
    ) -> list[Any]:
        req = work.request
        if isinstance(result, BaseException):
            if isinstance(result, PolicyError):
                code, reason = "policy_error", str(result)
            else:
                code, reason = "handler_error", f"{type(result).__name__}: {result}"
            return self._error_frames(req.id, req.robot, code, reason, timing, req.version)
        try:
            arrays, meta = result
            reply = self._stamped("reply", req.id, req.robot, req.version, meta, timing, arrays)
            frames = encode(reply, self.max_message_bytes)
        except (ProtocolError, TypeError, ValueError) as exc:
            reason = f"handler output cannot be sent: {exc}"
            return self._error_frames(req.id, req.robot, "handler_error", reason, timing, req.version)
        self._count("infer_ok")
        return frames
