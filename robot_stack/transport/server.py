"""Policy server: a ZeroMQ ROUTER that validates requests and runs a handler on a worker thread.

Threads:

* the **I/O thread** owns the ROUTER socket. It receives, validates each header (:func:`~robot_stack.transport.
  protocol.decode_header`: cheap, touches no array bytes), answers ``health`` / ``metadata`` at once (they carry no
  arrays), and admits ``infer`` work through :class:`~robot_stack.transport.admission.PendingQueue`: only
  negotiated codecs, arrays the model can take (``handler.check_request``), the robot ids the client's key may use,
  and within the caps (queued requests in all and per connection, queued bytes) -- otherwise an error reply
  (``busy`` for the caps). Latest wins per (client, robot id): a newer request replaces a queued older one, which
  is answered ``superseded``. It sends every reply;
* the **decoder thread** decompresses compressed requests, connections served round robin, so that decoding one
  client's streams never stalls the I/O thread or another client's raw requests;
* the **worker thread** takes decoded work **earliest deadline first** (requests without a deadline after those
  with one, ties by arrival), drops work whose deadline has passed (``deadline_exceeded``), runs the handler and
  hands the encoded reply back to the I/O thread (a deque plus an inproc wake-up socket; ZeroMQ sockets never
  cross threads). If the handler has ``max_batch > 1`` and a ``run_batch(items)`` method, the worker takes up to
  ``max_batch`` queued requests (by deadline) and runs them as one micro-batch; nothing waits for a batch to fill,
  so a lone robot never pays for batching. A handler with ``dispatch`` and ``free_slots`` (see
  :data:`DispatchHandler`) is run *asynchronously* instead: the worker hands it, earliest deadline first, as many
  requests as it has free slots (never an expired one) and goes on taking; the handler answers each request later,
  from any thread (the Ray Serve fleet of :mod:`robot_stack.fleet` works this way).

A handler may serve several models (``routes``: model id -> :class:`ModelRoute`); a request's ``model`` field
picks one (empty = the first), anything else is answered ``model_mismatch``; each model has its own negotiated
codecs, request check and metadata.

Per-client latency (queue, inference, total = receipt to reply, all server clock) is kept for the last
:data:`CLIENT_WINDOW` requests of each of at most :data:`MAX_TRACKED_CLIENTS` robot ids and reported by
:meth:`PolicyServer.client_stats`, in :meth:`PolicyServer.stats` and in every ``health`` reply.

No input crashes the server: every failure becomes an ``error`` reply, addressed with the full envelope so that
REQ and DEALER peers alike receive it, a counter in :meth:`PolicyServer.stats`, and at most one (rate-limited)
log line. After a burst, freed heap memory is handed back to the OS (:func:`~robot_stack.transport.memory.
trim_heap`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import zmq

from robot_stack.errors import (
    ConfigError,
    PayloadTooLargeError,
    PolicyError,
    ProtocolError,
    RequestTimeoutError,
    RobotStackError,
    ServerBusyError,
    VersionMismatchError,
)
from robot_stack.metrics import StageTimes
from robot_stack.transport.admission import (
    AdmissionLimits,
    ClientGrant,
    FairQueue,
    PendingQueue,
    QueuedRequest,
    RejectionBudget,
)
from robot_stack.transport.codecs import available_codecs
from robot_stack.transport.memory import trim_heap
from robot_stack.transport.protocol import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    ArraySpec,
    Header,
    Message,
    decode_arrays,
    decode_header,
    encode,
    encode_error,
    salvage_request_id,
)
from robot_stack.transport.ratelog import RateLimitedLog

__all__ = [
    "BatchItem",
    "CLIENT_WINDOW",
    "MAX_TRACKED_CLIENTS",
    "TRIM_AFTER_BYTES",
    "AdmissionLimits",
    "BatchHandler",
    "ClientGrant",
    "DispatchHandler",
    "Handler",
    "ModelRoute",
    "PolicyServer",
]

log = logging.getLogger("robot_stack.transport.server")

#: ``handler(arrays, meta) -> (arrays, meta)``. Arrays are name -> ndarray (request arrays are read-only views).
#: A handler may also have ``model_id: str``, ``metadata() -> dict``, ``compression: Mapping[str, str]`` (the codec
#: accepted per request array) and ``check_request(specs: Sequence[ArraySpec]) -> None`` (raises PolicyError for
#: declared arrays the model cannot take; called before anything is decoded) attributes; the server uses them.
Handler = Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]]

#: Requests remembered per robot for the per-client percentiles; robot ids tracked at most (least recent evicted).
CLIENT_WINDOW = 1024
MAX_TRACKED_CLIENTS = 256
#: A burst worth trimming the heap after (once the queue is empty, at most 1/s): this many declared bytes queued at
#: once, or this many bytes x 4 of refused messages, since the last trim. One robot's requests, one at a time,
#: never trigger it (its buffers are reused, and trimming would only make it fault their pages in again).
TRIM_AFTER_BYTES = 16 * 1024 * 1024
_TRIM_MIN_INTERVAL_NS = 1_000_000_000
#: Messages the I/O thread reads before it sends queued replies again (keeps replies flowing under a flood).
_RECV_BURST = 16
#: Answers smaller than this are sent copied (cheaper than zero-copy frames for a few hundred bytes).
_COPY_BELOW_BYTES = 64 * 1024
#: How long a CURVE server retries binding its context's ZAP handler while a closed server's is released, s.
ZAP_BIND_WAIT_S = 2.0


@dataclass(frozen=True)
class BatchItem:
    """One request handed to ``handler.run_batch``.

    Attributes:
        robot: the sender's robot id.
        arrays: name -> read-only request array.
        meta: the request's meta map.
        request_id: the client's request id.
        deadline_ns: server monotonic clock, ns; None = no deadline.
        client: the sender's identity (CURVE public key, z85, or ``conn:<routing id>``); per-robot state of a
            handler should be keyed on (client, robot), since robot ids are the clients' choice.
        model: the model the request is for (its ``model`` field, or the server's default model when empty).
    """

    robot: str
    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, Any]
    request_id: int
    deadline_ns: int | None
    client: str = ""
    model: str = ""


#: ``run_batch(items) -> results``: one result per item, in order: ``(arrays, meta)`` or the exception for that
#: item (a :class:`PolicyError` becomes ``policy_error``, anything else ``handler_error``).
BatchHandler = Callable[[Sequence[BatchItem]], list[tuple[Mapping[str, np.ndarray], Mapping[str, Any]] | BaseException]]

#: One request's answer: ``(arrays, meta)`` or the exception for it.
Result = tuple[Mapping[str, np.ndarray], Mapping[str, Any]] | BaseException

#: ``dispatch(items, done)``: start answering ``items`` and return at once; call ``done(i, result)`` exactly once
#: per item (``i`` its index in ``items``), from any thread. A handler with ``dispatch`` also has
#: ``free_slots(timeout_s) -> int``: how many more requests it takes now, waiting up to ``timeout_s`` for one to
#: free up (0 = none). Results map to answers as for ``run_batch``; a :class:`RequestTimeoutError` result (the
#: request ran out of time inside the handler) is answered ``deadline_exceeded``.
DispatchHandler = Callable[[Sequence[BatchItem], Callable[[int, Result], None]], None]


@dataclass(frozen=True)
class ModelRoute:
    """One model of a multi-model handler (``handler.routes``): what the server checks before queuing a request.

    Attributes:
        model_id: the id requests name in their ``model`` field.
        compression: request array name -> the one codec accepted for it (advertised in ``metadata``).
        check_request: ``check_request(specs)`` raises :class:`PolicyError` for declared arrays the model cannot
            take (called before anything is decoded); None = no check.
        metadata: ``metadata() -> dict``, the model's description for ``metadata`` replies; None = none.
    """

    model_id: str
    compression: Mapping[str, str] = field(default_factory=dict)
    check_request: Callable[[Sequence[ArraySpec]], None] | None = None
    metadata: Callable[[], dict[str, Any]] | None = None


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
    "busy",
    "robot_forbidden",
    "policy_error",
    "handler_error",
    "internal_error",
    "auth_rejected",
    "muted",
    "batches",
)


class PolicyServer:
    """Serve ``handler`` on a ROUTER socket.

    Args:
        handler: ``handler(arrays, meta) -> (arrays, meta)``; raising :class:`PolicyError` gives an error reply
            with code ``policy_error``, any other exception ``handler_error``. Optional attributes: ``model_id``,
            ``metadata() -> dict``, ``compression``, ``check_request`` (see :data:`Handler`), and for
            micro-batching ``max_batch: int`` with ``run_batch`` (see :data:`BatchHandler`), which the server then
            calls instead (also for single requests).
        bind: ZeroMQ endpoint. Binds localhost by default; ``tcp://0.0.0.0:5555`` exposes it (then use CURVE).
            ``tcp://127.0.0.1:*`` picks a free port (see :attr:`endpoint`).
        max_message_bytes: cap on the declared array bytes of one request; also sets ``ZMQ_MAXMSGSIZE`` so that
            libzmq itself disconnects a peer that sends a larger frame.
        model_id: reported in health/metadata and checked against a request's ``model`` field (defaults to
            ``handler.model_id`` if present). A request naming another model is rejected (``model_mismatch``).
        curve_secret_key: z85 server secret key; enables CURVE encryption (clients must know the public key) and
            identifies each client by its public key.
        authorized_client_keys: z85 client public keys allowed to connect (needs ``curve_secret_key``); None =
            any client that knows the server key. A mapping key -> name also names them in the logs; a mapping
            key -> :class:`ClientGrant` also limits the robot ids each key may use (others: ``robot_forbidden``).
            Refused handshakes are counted as ``auth_rejected``.
        limits: queue caps (:class:`AdmissionLimits`); a request over a cap is answered ``busy``.
        compression: request array name -> the one codec accepted for it (what the server advertises in
            ``metadata`` and clients adopt); default ``handler.compression`` or none. Any other codec is a
            ``protocol_error``; raw arrays are always accepted.
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
        authorized_client_keys: Iterable[bytes] | Mapping[bytes, str | ClientGrant] | None = None,
        limits: AdmissionLimits | None = None,
        compression: Mapping[str, str] | None = None,
        heartbeat_ms: int = 1000,
        context: zmq.Context | None = None,
    ) -> None:
        if max_message_bytes <= 0 or max_header_bytes <= 0:
            raise ConfigError("max_message_bytes and max_header_bytes must be positive byte counts")
        self.limits = limits or AdmissionLimits(
            max_pending_bytes=max(AdmissionLimits.max_pending_bytes, max_message_bytes)
        )
        if self.limits.max_pending_bytes < max_message_bytes:
            raise ConfigError(
                f"limits.max_pending_bytes ({self.limits.max_pending_bytes}) is below max_message_bytes "
                f"({max_message_bytes}): a largest request could never be queued"
            )
        self._handler = handler
        self.max_message_bytes = int(max_message_bytes)
        self.max_header_bytes = int(max_header_bytes)
        routes = getattr(handler, "routes", None)
        self._multi = bool(routes)
        if routes:
            self._routes: dict[str, ModelRoute] = {str(k): r for k, r in routes.items()}
            self.model_id = model_id if model_id is not None else next(iter(self._routes))
            if self.model_id not in self._routes:
                raise ConfigError(f"model_id {self.model_id!r} is not among the handler's routes {list(self._routes)}")
        else:
            self.model_id = model_id if model_id is not None else str(getattr(handler, "model_id", ""))
            accepted = compression if compression is not None else getattr(handler, "compression", None)
            check = getattr(handler, "check_request", None)
            meta_fn = getattr(handler, "metadata", None)
            self._routes = {
                self.model_id: ModelRoute(
                    self.model_id,
                    {str(k): str(v) for k, v in (accepted or {}).items()},
                    check if callable(check) else None,
                    meta_fn if callable(meta_fn) else None,
                )
            }
        self._default_route = self._routes[self.model_id]
        self.compression: dict[str, str] = dict(self._default_route.compression)
        self._ctx = context or zmq.Context.instance()
        self._auth: Any = None
        self._grants: dict[str, ClientGrant] = {}
        self._curve = curve_secret_key is not None
        self._counts: collections.Counter[str] = collections.Counter({k: 0 for k in _COUNTERS})
        self._counts_lock = threading.Lock()
        self._queue = PendingQueue(self.limits)
        self._to_decode: FairQueue[QueuedRequest] = FairQueue()
        self._run_batch = getattr(handler, "run_batch", None)
        self.max_batch = max(1, int(getattr(handler, "max_batch", 1))) if callable(self._run_batch) else 1
        dispatch, free_slots = getattr(handler, "dispatch", None), getattr(handler, "free_slots", None)
        self._dispatch: DispatchHandler | None = dispatch if callable(dispatch) and callable(free_slots) else None
        self._free_slots: Callable[[float], int] | None = free_slots if self._dispatch is not None else None
        self._post_lock = threading.Lock()  # guards the wake-up socket that answers of a dispatch handler use
        self._post_wake: zmq.Socket | None = None
        self._client_times: collections.OrderedDict[str, tuple[StageTimes, collections.deque[int]]] = (
            collections.OrderedDict()
        )
        self._client_lock = threading.Lock()
        self._outbox: collections.deque[list[Any]] = collections.deque()
        self._stop = threading.Event()
        self._closed = False
        self._t_start_ns = time.monotonic_ns()
        self._wake_addr = f"inproc://robot-stack-server-wake-{id(self)}-{time.monotonic_ns()}"
        self._rejections = RateLimitedLog(log)
        self._budget = RejectionBudget(self.limits.rejections_per_s, self.limits.rejection_burst)
        self._refused_bytes = 0  # bytes of refused messages since the last trim
        self._message_bytes = 0  # size of the message being handled (I/O thread)
        self._t_trim_ns = 0
        self.trims = 0

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
            # The authenticator always runs: besides checking the allow-list it stamps every message with the
            # client's public key (ZMQ "User-Id"), the identity latest-wins and the robot-id grants key on.
            self._grants = _grants_by_z85(authorized_client_keys) if authorized_client_keys is not None else {}
            try:
                self._start_authenticator(None if authorized_client_keys is None else self._grants)
            except Exception:
                sock.close(0)
                raise
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
        self._wake_rx = self._ctx.socket(zmq.PULL)
        self._wake_rx.setsockopt(zmq.LINGER, 0)
        self._wake_rx.bind(self._wake_addr)
        self._io_thread = threading.Thread(target=self._io_loop, name="policy-server-io", daemon=True)
        self._worker_thread = threading.Thread(
            target=self._work_loop if self._dispatch is None else self._dispatch_loop,
            name="policy-server-worker",
            daemon=True,
        )
        self._decoder_thread = threading.Thread(target=self._decode_loop, name="policy-server-decoder", daemon=True)
        self._started = False
        log.info(
            "policy server bound to %s (model %r, cap %d bytes, queue caps %s, accepted codecs %s)",
            self.endpoint,
            self.model_id,
            max_message_bytes,
            self.limits,
            self.compression or "none",
        )

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> PolicyServer:
        """Start the I/O, decoder and worker threads (idempotent); return self."""
        if self._closed:
            raise ConfigError("this PolicyServer was closed; create a new one")
        if not self._started:
            self._started = True
            self._io_thread.start()
            self._decoder_thread.start()
            self._worker_thread.start()
        return self

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the threads, close the sockets. Idempotent. Queued requests are dropped unanswered."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._queue.close()
        self._to_decode.close()
        if self._started:
            self._worker_thread.join(timeout_s)
            self._decoder_thread.join(timeout_s)
            self._io_thread.join(timeout_s)
        with self._post_lock:  # answers of a dispatch handler arriving from now on are dropped
            if self._post_wake is not None:
                self._post_wake.close(0)
                self._post_wake = None
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
        ``queued`` (requests) and ``queued_bytes`` (their declared bytes), ``heap_trims``, and ``clients`` (see
        :meth:`client_stats`). Thread-safe copy."""
        with self._counts_lock:
            out: dict[str, Any] = dict(self._counts)
        out["queued"] = len(self._queue)
        out["queued_bytes"] = self._queue.queued_bytes
        out["heap_trims"] = self.trims
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
    def _start_authenticator(self, allowed: Mapping[str, ClientGrant] | None) -> None:
        """ZAP handler: admit keys in ``allowed`` (z85 str -> grant), or every key when None."""
        from zmq.auth.thread import ThreadAuthenticator

        server = self

        class _Allow:
            def callback(self, domain: str, key: bytes) -> bool:
                if allowed is None:
                    return True
                grant = allowed.get(key.decode("ascii", "replace"))
                if grant is None:
                    server._count("auth_rejected")
                    server._rejections.log(
                        logging.WARNING, "auth_rejected", "rejected CURVE client key %r (not in the allow-list)", key
                    )
                    return False
                log.debug("CURVE client %r admitted", grant.name)
                return True

        # ZeroMQ has one ZAP handler per context, bound to a fixed inproc address. A server closed just before
        # (a restart, the previous test) releases it asynchronously, on libzmq's reaper thread: on a loaded host
        # that took long enough for the bind to fail with EADDRINUSE, so the bind is retried for a while; if it
        # still fails, another CURVE server holds this context
        deadline = time.monotonic() + ZAP_BIND_WAIT_S
        while True:
            auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("robot_stack.transport.auth"))
            try:
                auth.start()
                break
            except zmq.ZMQError as exc:
                if getattr(auth, "zap_socket", None) is not None:
                    auth.zap_socket.close(0)
                if exc.errno != zmq.EADDRINUSE:
                    raise
                if time.monotonic() >= deadline:
                    raise ConfigError(
                        "this ZeroMQ context already has a ZAP (CURVE authentication) handler: another CURVE policy "
                        "server runs on it in this process; give this server its own (context=zmq.Context())"
                    ) from exc
                time.sleep(0.05)
        self._auth = auth
        self._auth.configure_curve_callback(domain="*", credentials_provider=_Allow())

    def _stop_authenticator(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def _client_of(self, frames: list[Any]) -> str:
        """The sender's identity: its CURVE public key (z85) under CURVE, else its connection."""
        if self._curve:
            try:
                return str(frames[0].get("User-Id"))
            except (zmq.ZMQError, AttributeError):  # (no ZAP metadata: cannot happen while the authenticator runs)
                pass
        return f"conn:{_frame_bytes(frames[0]).hex()}"

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
        t_reply = time.monotonic_ns()
        timing = None if timing is None else {**timing, "t_reply_ns": t_reply}
        return encode_error(request_id, robot, self.model_id, code, reason, t_reply, timing, version)

    def _reject(
        self,
        envelope: list[Any],
        request_id: int,
        robot: str,
        code: str,
        reason: str,
        timing: dict | None,
        version: int = PROTOCOL_VERSION,
    ) -> None:
        """Answer ``code`` with ``reason``, log one (rate-limited) line, and charge the sender's rejection
        budget (see :class:`AdmissionLimits`)."""
        self._rejections.log(
            logging.WARNING, code, "rejected request %d of robot %r: [%s] %s", request_id, robot, code, reason
        )
        self._send(envelope + self._error_frames(request_id, robot, code, reason, timing, version))
        self._refused_bytes += self._message_bytes
        connection = _frame_bytes(envelope[0])
        if not self._budget.spend(connection):
            self._rejections.log(
                logging.WARNING,
                "muted",
                "muting connection %s: more than %d rejected messages (%d/s sustained); its messages are dropped "
                "unanswered until its budget refills",
                connection.hex(),
                self.limits.rejection_burst,
                self.limits.rejections_per_s,
            )

    def _stamped(
        self,
        kind: str,
        request_id: int,
        robot: str,
        version: int,
        meta: Mapping[str, Any],
        timing: dict | None,
        arrays: Mapping[str, Any] | None = None,
        model: str | None = None,
    ) -> Message:
        """A reply or error message stamped with the server's send time (``t_send_ns`` and ``t_reply_ns``)."""
        t_reply = time.monotonic_ns()
        return Message(
            kind=kind,
            id=request_id,
            robot=robot,
            model=self.model_id if model is None else model,
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
                        for _ in range(_RECV_BURST):  # bounded drain keeps replies flowing under a flood
                            try:
                                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                            except zmq.Again:
                                break
                            self._on_message_safe(frames)
                            del frames
                    self._maybe_trim()
                except Exception:  # the loop must survive anything
                    self._count("internal_error")
                    self._rejections.log(
                        logging.ERROR, "io_loop", "policy server I/O loop error (continuing)", exc_info=True
                    )
        finally:
            self._sock.close(0)
            self._wake_rx.close(0)

    def _maybe_trim(self) -> None:
        """After a burst (see :data:`TRIM_AFTER_BYTES`) and once the queue is empty, give freed heap memory back
        to the OS (at most once a second)."""
        if len(self._queue):
            return
        now = time.monotonic_ns()
        if now - self._t_trim_ns < _TRIM_MIN_INTERVAL_NS:
            return
        if self._queue.peak_bytes < TRIM_AFTER_BYTES and self._refused_bytes < 4 * TRIM_AFTER_BYTES:
            return
        self._queue.reset_peak()
        self._refused_bytes = 0
        self._t_trim_ns = now
        if trim_heap():
            self.trims += 1

    def _send(self, frames: list[Any]) -> None:
        try:  # zero-copy pays off for array frames; small answers (errors, health) are cheaper copied
            copy = len(frames) <= 3 and sum(len(f) for f in frames) < _COPY_BELOW_BYTES
            self._sock.send_multipart(frames, copy=copy, flags=zmq.NOBLOCK)
            self._count("replied")
        except zmq.Again:
            self._rejections.log(logging.WARNING, "hwm", "reply dropped: the client's send queue is full (HWM)")

    def _on_message_safe(self, frames: list[Any]) -> None:
        """:meth:`_on_message`, but a server bug still answers the sender (``internal_error``, with the same
        envelope, so REQ peers get it too) and is counted. Messages of a muted connection are dropped unread."""
        if self._budget.muted(_frame_bytes(frames[0])):
            self._count("received")
            self._count("muted")
            self._refused_bytes += sum(len(f) for f in frames)
            return
        envelope, body = _split_envelope(frames)
        try:
            self._on_message(frames, envelope, body, time.monotonic_ns())
        except Exception:
            self._rejections.log(
                logging.ERROR,
                "internal_error",
                "policy server failed on a message (answered internal_error, continuing)",
                exc_info=True,
            )
            try:
                self._send(envelope + self._error_frames(-1, "", "internal_error", "server bug; see its log", None))
            except Exception:
                log.exception("could not even answer internal_error")

    def _on_message(self, frames: list[Any], envelope: list[Any], body: list[Any], t_recv_ns: int) -> None:
        self._count("received")
        self._message_bytes = sum(len(f) for f in frames)
        if not body:
            self._reject(envelope, -1, "", "protocol_error", "empty message", None)
            return
        try:
            header = decode_header(body, self.max_message_bytes, self.max_header_bytes)
        except (PayloadTooLargeError, VersionMismatchError, ProtocolError) as exc:
            code = {PayloadTooLargeError: "payload_too_large", VersionMismatchError: "version_mismatch"}.get(
                type(exc), "protocol_error"
            )
            rid = salvage_request_id(body[0], self.max_header_bytes)
            self._reject(envelope, rid, "", code, str(exc), {"t_recv_ns": t_recv_ns})
            return
        timing = {"t_client_send_ns": header.t_send_ns, "t_recv_ns": t_recv_ns}
        v = header.version

        def reject(code: str, reason: str) -> None:
            self._reject(envelope, header.id, header.robot, code, reason, timing, v)

        route = self._route(header.model)
        if route is None:
            served = list(self._routes) if self._multi else self.model_id
            reject("model_mismatch", f"request is for model {header.model!r} but this server serves {served!r}")
            return
        client = self._client_of(frames) if self._grants or header.kind == "infer" else ""
        grant = self._grants.get(client) if self._grants else None
        if grant is not None and not grant.allows(header.robot):
            allowed = sorted(grant.robot_ids or ())
            reject(
                "robot_forbidden",
                f"client key {grant.name!r} may not send as robot {header.robot!r}; its allow-list entry grants "
                f"{allowed} (add the id to {grant.name}.robots next to its key on the server)",
            )
            return
        if header.kind == "infer":
            self._admit(envelope, header, body, t_recv_ns, client, _frame_bytes(frames[0]), reject, route)
        elif header.kind in ("health", "metadata"):
            if header.specs:
                reject(
                    "protocol_error",
                    f"{header.kind} requests carry no arrays; this one declares {len(header.specs)} "
                    f"({header.declared_bytes} bytes decoded); send arrays with infer only",
                )
                return
            self._count(header.kind)
            meta = self._health() if header.kind == "health" else self._metadata(route)
            reply = self._stamped("reply", header.id, header.robot, v, meta, timing)
            self._send(envelope + encode(reply, self.max_message_bytes))
        else:
            reject("bad_kind", f"kind {header.kind!r} is not a request; send infer, health or metadata")

    def _admit(
        self,
        envelope: list[Any],
        header: Header,
        body: list[Any],
        t_recv_ns: int,
        client: str,
        connection: bytes,
        reject: Callable[[str, str], None],
        route: ModelRoute,
    ) -> None:
        """Queue an infer request if it passes every check that needs no decoding; otherwise reject it."""
        compression = route.compression
        for spec in header.specs:
            if spec.codec and compression.get(spec.name) != spec.codec:
                accepted = compression.get(spec.name)
                reject(
                    "protocol_error",
                    f"array {spec.name!r} arrives {spec.codec}-compressed, but this server accepts "
                    + (f"only {accepted} or raw for it" if accepted else "it only raw")
                    + f" (negotiated codecs: {dict(compression) or 'none'}); compress only the streams the server's "
                    "metadata lists (PolicyClient.negotiate_compression())",
                )
                return
        if route.check_request is not None:
            try:
                route.check_request(header.specs)
            except PolicyError as exc:
                reject("policy_error", str(exc))
                return
        deadline = t_recv_ns + round(header.timeout_ms * 1e6) if header.timeout_ms > 0 else None
        item = QueuedRequest(envelope, header, body, t_recv_ns, deadline, client, connection)
        if not header.compressed:
            try:
                item.arrays = decode_arrays(header, body)  # zero-copy views: cheap
            except ProtocolError as exc:
                reject("protocol_error", str(exc))
                return
        try:
            old = self._queue.admit(item)
        except ServerBusyError as exc:
            reject("busy", str(exc))
            return
        if header.compressed:
            self._to_decode.push(connection, item)
        if old is not None:
            reason = f"superseded by newer request {header.id} from robot {header.robot!r} (latest wins)"
            old_h = old.header
            self._send(
                old.envelope + self._error_frames(old_h.id, old_h.robot, "superseded", reason, None, old_h.version)
            )

    def _route(self, model: str) -> ModelRoute | None:
        """The route of a request's ``model`` field: the default for none; None if this server does not serve it
        (a single-model server without a model id serves whatever is asked)."""
        if not model or (not self._multi and not self.model_id):
            return self._default_route
        return self._routes.get(model)

    def _health(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "ok",
            "model": self.model_id,
            "uptime_s": (time.monotonic_ns() - self._t_start_ns) / 1e9,
            "queued": len(self._queue),
            "max_batch": self.max_batch,
            "clients": self.client_stats(),
        }
        if self._multi:
            out["models"] = list(self._routes)
        health = getattr(self._handler, "health", None)
        if callable(health):
            try:
                out.update(health())
            except Exception:
                log.exception("handler.health() failed")
                out["status"] = "degraded"
        return out

    def _metadata(self, route: ModelRoute) -> dict[str, Any]:
        fn = route.metadata
        base: dict[str, Any] = {
            "model": route.model_id,
            "max_message_bytes": self.max_message_bytes,
            "max_batch": self.max_batch,
            "protocol_versions": list(SUPPORTED_VERSIONS),
            "codecs": list(available_codecs()),
            "compression": dict(route.compression),
        }
        if self._multi:
            base["models"] = list(self._routes)
        if callable(fn):
            try:
                base.update(fn())
            except Exception:
                log.exception("handler.metadata() failed")
        return base

    # ------------------------------------------------------------------------------------ decoder thread
    def _wake_socket(self) -> zmq.Socket:
        wake = self._ctx.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(self._wake_addr)
        return wake

    @staticmethod
    def _wake(wake: zmq.Socket) -> None:
        with contextlib.suppress(zmq.Again):  # a wake-up is already pending
            wake.send(b"", zmq.NOBLOCK)

    def _decode_loop(self) -> None:
        wake = self._wake_socket()
        try:
            while True:
                item = self._to_decode.pop()
                if item is None:
                    return
                if not self._queue.is_current(item) or (
                    item.deadline_ns is not None and time.monotonic_ns() > item.deadline_ns
                ):
                    continue  # superseded, or the worker will answer deadline_exceeded: do not decode
                try:
                    arrays = decode_arrays(item.header, item.frames)
                except Exception as exc:
                    code, reason = (
                        ("protocol_error", str(exc))
                        if isinstance(exc, ProtocolError)
                        else ("internal_error", f"decoding failed: {type(exc).__name__}")
                    )
                    if code == "internal_error":
                        self._rejections.log(logging.ERROR, code, "decoder failed on a request", exc_info=True)
                    if self._queue.drop(item):
                        h = item.header
                        self._rejections.log(
                            logging.WARNING,
                            code,
                            "rejected request %d of robot %r: [%s] %s",
                            h.id,
                            h.robot,
                            code,
                            reason,
                        )
                        frames = self._error_frames(
                            h.id, h.robot, code, reason, {"t_recv_ns": item.t_recv_ns}, h.version
                        )
                        self._outbox.append(item.envelope + frames)
                        self._wake(wake)
                    continue
                self._queue.mark_decoded(item, arrays)
                del arrays, item
        finally:
            wake.close(0)

    # ------------------------------------------------------------------------------------- worker thread
    def _work_loop(self) -> None:
        wake = self._wake_socket()
        try:
            while True:
                taken = self._queue.take(self.max_batch)
                if taken is None:
                    return
                batch, expired = taken
                replies = [w.envelope + self._expired_frames(w) for w in expired]
                if batch:
                    try:
                        frames = self._process(batch)
                    except Exception:
                        self._rejections.log(
                            logging.ERROR, "internal_error", "policy server worker error (continuing)", exc_info=True
                        )
                        frames = [
                            self._error_frames(w.header.id, w.header.robot, "internal_error", "internal", None)
                            for w in batch
                        ]
                    replies.extend(w.envelope + f for w, f in zip(batch, frames, strict=True))
                self._outbox.extend(replies)
                del taken, batch, expired, replies  # release the requests' buffers before waiting again
                self._wake(wake)
        finally:
            wake.close(0)

    def _batch_item(self, work: QueuedRequest) -> BatchItem:
        h = work.header
        return BatchItem(h.robot, _arrays(work), h.meta, h.id, work.deadline_ns, work.client, h.model or self.model_id)

    def _dispatch_loop(self) -> None:
        """Worker of a dispatch handler: hand it requests, earliest deadline first, while it has free slots;
        answer expired requests (never handed over) meanwhile."""
        assert self._dispatch is not None and self._free_slots is not None
        with self._post_lock:
            self._post_wake = self._wake_socket()
        while not self._stop.is_set():
            try:
                slots = self._free_slots(0.05)
                taken = self._queue.take(slots, timeout_s=None if slots > 0 else 0.0)
                if taken is None:
                    return
                batch, expired = taken
                for w in expired:
                    self._post(w.envelope + self._expired_frames(w))
                if batch:
                    self._hand_over(batch)
                del taken, batch, expired
            except Exception:  # the loop must survive anything
                self._rejections.log(
                    logging.ERROR, "internal_error", "policy server dispatch error (continuing)", exc_info=True
                )

    def _hand_over(self, batch: list[QueuedRequest]) -> None:
        """Give ``batch`` to the dispatch handler; each answer is posted when its ``done`` call comes."""
        assert self._dispatch is not None
        t_start = time.monotonic_ns()
        answered = [False] * len(batch)
        lock = threading.Lock()

        def done(i: int, result: Result) -> None:
            with lock:
                if answered[i]:
                    return  # a handler bug (a second answer); the first one stands
                answered[i] = True
            self._finish(batch[i], t_start, result)

        try:
            self._dispatch([self._batch_item(w) for w in batch], done)
        except Exception as exc:
            self._rejections.log(logging.ERROR, "dispatch", "handler.dispatch raised", exc_info=True)
            for i in range(len(batch)):
                done(i, exc)

    def _finish(self, work: QueuedRequest, t_start: int, result: Result) -> None:
        """Encode the answer of one dispatched request and post it to the I/O thread (any thread)."""
        req = work.header
        t_end = time.monotonic_ns()
        timing = _run_timing(work, t_start, t_end, 1)
        if isinstance(result, RequestTimeoutError):
            frames = self._error_frames(req.id, req.robot, "deadline_exceeded", str(result), timing, req.version)
        else:
            frames = self._answer(work, result, timing)
            self._record_client(
                req.robot, float(timing["queue_ms"]), float(timing["infer_ms"]), (t_end - work.t_recv_ns) / 1e6, 1
            )
        self._post(work.envelope + frames)

    def _post(self, frames: list[Any]) -> None:
        """Queue a reply for the I/O thread and wake it (thread-safe; dropped once the server is closed)."""
        with self._post_lock:
            if self._post_wake is None:
                return
            self._outbox.append(frames)
            self._wake(self._post_wake)

    def _expired_frames(self, work: QueuedRequest) -> list[Any]:
        req = work.header
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
        self, batch: list[QueuedRequest]
    ) -> list[tuple[Mapping[str, np.ndarray], Mapping[str, Any]] | BaseException]:
        """Run the handler on the batch; one result or exception per work item, in order."""
        if self._run_batch is not None:
            items = [self._batch_item(w) for w in batch]
            try:
                results = list(self._run_batch(items))
            except Exception as exc:  # a batch-level failure fails every item of the batch
                self._rejections.log(
                    logging.ERROR, "run_batch", "handler.run_batch raised for %d request(s)", len(batch), exc_info=True
                )
                return [exc] * len(batch)
            if len(results) != len(batch):
                err = RuntimeError(f"handler.run_batch returned {len(results)} results for {len(batch)} requests")
                return [err] * len(batch)
            return results
        out: list[tuple[Mapping[str, np.ndarray], Mapping[str, Any]] | BaseException] = []
        for work in batch:
            try:
                out.append(self._handler(_arrays(work), work.header.meta))
            except Exception as exc:
                if not isinstance(exc, RobotStackError):
                    self._rejections.log(
                        logging.ERROR, "handler", "handler raised for request %d", work.header.id, exc_info=True
                    )
                out.append(exc)
        return out

    def _process(self, batch: list[QueuedRequest]) -> list[list[Any]]:
        """Run one (micro-)batch; return the encoded answer frames of each work item, in order."""
        t_start = time.monotonic_ns()
        results = self._call_handler(batch)
        t_end = time.monotonic_ns()
        if len(batch) > 1 or self._run_batch is not None:
            self._count("batches")
        out: list[list[Any]] = []
        for work, result in zip(batch, results, strict=True):
            req = work.header
            timing = _run_timing(work, t_start, t_end, len(batch))
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
        work: QueuedRequest,
        result: tuple[Mapping[str, np.ndarray], Mapping[str, Any]] | BaseException,
        timing: dict[str, int | float],
    ) -> list[Any]:
        req = work.header
        if isinstance(result, BaseException):
            if isinstance(result, PolicyError):
                code, reason = "policy_error", str(result)
            else:
                code, reason = "handler_error", f"{type(result).__name__}: {result}"
            return self._error_frames(req.id, req.robot, code, reason, timing, req.version)
        try:
            arrays, meta = result
            model = req.model or self.model_id
            reply = self._stamped("reply", req.id, req.robot, req.version, meta, timing, arrays, model)
            frames = encode(reply, self.max_message_bytes)
        except (ProtocolError, TypeError, ValueError) as exc:
            reason = f"handler output cannot be sent: {exc}"
            return self._error_frames(req.id, req.robot, "handler_error", reason, timing, req.version)
        self._count("infer_ok")
        return frames


def _run_timing(work: QueuedRequest, t_start: int, t_end: int, batch: int) -> dict[str, int | float]:
    """The reply's ``timing`` of a request run from ``t_start`` to ``t_end`` (server clock, ns) in a batch."""
    timing: dict[str, int | float] = {
        "t_client_send_ns": work.header.t_send_ns,
        "t_recv_ns": work.t_recv_ns,
        "t_start_ns": t_start,
        "queue_ms": (t_start - work.t_recv_ns) / 1e6,
        "t_end_ns": t_end,
        "infer_ms": (t_end - t_start) / 1e6,
        "batch": batch,
    }
    if work.t_decoded_ns is not None:
        timing["decode_ms"] = (work.t_decoded_ns - work.t_recv_ns) / 1e6
    return timing


def _arrays(work: QueuedRequest) -> Mapping[str, np.ndarray]:
    assert work.arrays is not None, "only decoded work is taken"
    return work.arrays


def _frame_bytes(frame: Any) -> bytes:
    inner = getattr(frame, "bytes", None)
    return inner if isinstance(inner, bytes) else bytes(frame)


def _split_envelope(frames: list[Any]) -> tuple[list[Any], list[Any]]:
    """(envelope, body) of a ROUTER message: the routing id, plus the empty delimiter frame a REQ peer puts
    before its message (replies must carry it back, or the REQ socket drops them)."""
    envelope, body = [frames[0]], frames[1:]
    if body and len(body[0]) == 0:
        envelope.append(body[0])
        body = body[1:]
    return envelope, body


def _grants_by_z85(keys: Iterable[bytes] | Mapping[bytes, str | ClientGrant]) -> dict[str, ClientGrant]:
    """Allow-list in any accepted form -> z85 public key (str) -> grant."""
    out: dict[str, ClientGrant] = {}
    items = keys.items() if isinstance(keys, Mapping) else ((k, "") for k in keys)
    for key, value in items:
        z85 = key.decode("ascii") if isinstance(key, bytes) else str(key)
        out[z85] = value if isinstance(value, ClientGrant) else ClientGrant(str(value) or z85[:8])
    return out
