"""Robot-side policy client: a DEALER socket with request ids, timeouts, reconnects and clock-offset estimation.

One request is in flight at a time (calls are serialised by a lock). After a timeout the socket is closed with
linger 0 and recreated, so a late reply to the abandoned request can never be taken for the answer to a newer one
(replies are also matched by request id). ZeroMQ reconnects by itself after a server restart.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import zmq

from robot_stack.errors import (
    ConfigError,
    ProtocolError,
    RequestTimeoutError,
    ServerBusyError,
    ServerError,
)
from robot_stack.transport.answers import AnswerTracking
from robot_stack.transport.codecs import available_codecs
from robot_stack.transport.protocol import DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_MESSAGE_BYTES, Message, decode, encode

__all__ = ["CallTiming", "PolicyClient", "Reply"]

log = logging.getLogger("robot_stack.transport.client")


@dataclass(frozen=True)
class CallTiming:
    """Where the time of one call went, in milliseconds.

    Attributes:
        serialize_ms: client-side encoding (header + array views).
        round_trip_ms: first byte sent -> reply received, client clock.
        server_ms: server receipt -> server reply, server clock (0 if the server did not report it).
        infer_ms: time inside the server's handler (the model), 0 for health/metadata.
        queue_ms: time the request waited in the server's queue.
        network_ms: ``round_trip_ms - server_ms``: transfer both ways plus socket/IO-thread overhead.
        deserialize_ms: client-side decoding of the reply.
        t_send_ns, t_recv_ns: client monotonic clock, ns.
    """

    serialize_ms: float
    round_trip_ms: float
    server_ms: float
    infer_ms: float
    queue_ms: float
    network_ms: float
    deserialize_ms: float
    t_send_ns: int
    t_recv_ns: int

    @classmethod
    def measured(
        cls, t0: int, t_send: int, t_recv: int, t_done: int, server_ns: int, timing: Mapping[str, Any]
    ) -> CallTiming:
        """From the client's monotonic stamps, ns (encoding began, sent, answer received, answer decoded), the
        server's receipt -> reply span ``server_ns`` and its timing map (``infer_ms``, ``queue_ms``)."""
        round_trip_ns = t_recv - t_send
        return cls(
            serialize_ms=(t_send - t0) / 1e6,
            round_trip_ms=round_trip_ns / 1e6,
            server_ms=server_ns / 1e6,
            infer_ms=float(timing.get("infer_ms", 0.0)),
            queue_ms=float(timing.get("queue_ms", 0.0)),
            network_ms=(round_trip_ns - server_ns) / 1e6,
            deserialize_ms=(t_done - t_recv) / 1e6,
            t_send_ns=t_send,
            t_recv_ns=t_recv,
        )


@dataclass(frozen=True)
class Reply:
    """A successful answer.

    Attributes:
        arrays: name -> read-only array (views of the received frames).
        meta: the handler's meta map.
        timing: where the time went.
        request_id: the id of the request this answers.
        server_timing: raw server-clock timestamps (``t_recv_ns``, ``t_start_ns``, ``t_end_ns``, ``t_reply_ns``...).
    """

    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, Any]
    timing: CallTiming
    request_id: int
    server_timing: Mapping[str, int | float]


class PolicyClient(AnswerTracking):
    """Talk to a :class:`~robot_stack.transport.server.PolicyServer`.

    Args:
        endpoint: e.g. ``tcp://127.0.0.1:5555``.
        robot_id: identifies this robot (latest-wins is per robot id on the server).
        timeout_s: default per-call budget; also sent to the server as the request deadline.
        model_id: if set, the server rejects the request unless it serves this model.
        max_message_bytes: local cap checked before sending (keep equal to the server's).
        server_public_key / client_secret_key / client_public_key: z85 CURVE keys (all three, or none); from key
            files: ``PolicyClient(..., **client_curve_kwargs("keys/server.key", "keys/robot1.key_secret"))``.
        compression: request array name -> codec (``png``, ``jpeg``, ``zstd``, ``lz4``); usually set by
            :meth:`negotiate_compression` from the served model's manifest. Arrays not named go raw.
        context: ZeroMQ context (default: the process-wide instance).
    """

    _log = log

    def __init__(
        self,
        endpoint: str,
        robot_id: str,
        *,
        timeout_s: float = 1.0,
        model_id: str = "",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        server_public_key: bytes | None = None,
        client_secret_key: bytes | None = None,
        client_public_key: bytes | None = None,
        heartbeat_ms: int = 1000,
        compression: Mapping[str, str] | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive seconds, got {timeout_s}")
        keys = (server_public_key, client_secret_key, client_public_key)
        if any(k is not None for k in keys) and not all(k is not None for k in keys):
            raise ConfigError("CURVE needs server_public_key, client_secret_key and client_public_key together")
        self.endpoint = endpoint
        self.robot_id = robot_id
        self.model_id = model_id
        self.timeout_s = float(timeout_s)
        self.max_message_bytes = int(max_message_bytes)
        self._curve = keys if server_public_key is not None else None
        self.compression: dict[str, str] = {}
        if compression:
            self.set_compression(compression)
        self._heartbeat_ms = heartbeat_ms
        self._ctx = context or zmq.Context.instance()
        self._lock = threading.Lock()
        self._next_id = random.randrange(1, 2**31)
        self._sock: zmq.Socket | None = None
        self._init_answer_tracking()
        self.timeouts = 0
        self.stale_replies = 0
        self._connect()

    # ------------------------------------------------------------------------------------------- socket
    def _connect(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, self._heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * self._heartbeat_ms)
        sock.setsockopt(zmq.MAXMSGSIZE, max(self.max_message_bytes, DEFAULT_MAX_HEADER_BYTES))
        if self._curve is not None:
            server_pub, client_sec, client_pub = self._curve
            sock.setsockopt(zmq.CURVE_SERVERKEY, server_pub)
            sock.setsockopt(zmq.CURVE_SECRETKEY, client_sec)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, client_pub)
        sock.connect(self.endpoint)
        self._sock = sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        self._connect()

    def close(self) -> None:
        """Close the socket (pending requests are dropped). Idempotent."""
        with self._lock:
            if self._sock is not None:
                self._sock.close(0)
                self._sock = None

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --------------------------------------------------------------------------------------------- calls
    def infer(
        self,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> Reply:
        """Send named arrays (dtype whitelist, see protocol) and wait for the server's arrays.

        The arrays must not be mutated while the call runs (they are sent without copying). ``before_send`` runs
        after encoding, right before the frames leave, and may refuse the request by raising (the policy cycle
        measures the observation's age there: :class:`~robot_stack.errors.StaleObservationError`); nothing is sent
        then.

        Raises:
            StaleObservationError: (from ``before_send``) the observation was too old at the moment of sending.
            RequestTimeoutError: no reply within ``timeout_s`` (the socket is then recreated).
            ServerError: the server answered with an error; ``.code`` and ``.reason`` say why
                (:class:`~robot_stack.errors.ServerBusyError` for ``busy``: a queue cap was reached, retry later).
            PayloadTooLargeError / ProtocolError: the request cannot be encoded (nothing was sent).
        """
        return self._call("infer", arrays, meta or {}, timeout_s, before_send)

    def health(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Ping the server; return its health map (``status``, ``model``, ``uptime_s``, ``queued``) plus
        ``round_trip_ms``. Every call also refines :attr:`clock_offset_ns`."""
        reply = self._call("health", {}, {}, timeout_s)
        return {**reply.meta, "round_trip_ms": reply.timing.round_trip_ms}

    def metadata(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The served model's description (manifest summary: inputs, outputs, action space, dt, horizon...)."""
        return dict(self._call("metadata", {}, {}, timeout_s).meta)

    def sync_clock(self, samples: int = 8, timeout_s: float | None = None) -> int:
        """Ping ``samples`` times and return the offset estimate (see :attr:`clock_offset_ns`)."""
        for _ in range(samples):
            self.health(timeout_s)
        offset = self.clock_offset_ns
        assert offset is not None
        return offset

    def set_compression(self, compression: Mapping[str, str]) -> None:
        """Compress the named request arrays with the given codecs from now on (``{}`` = all raw).

        Raises:
            ConfigError: a codec is unknown or not available on this machine.
        """
        have = available_codecs()
        bad = {name: codec for name, codec in compression.items() if codec not in have}
        if bad:
            raise ConfigError(f"codecs {bad} not available here (available: {list(have)}); install them or drop them")
        self.compression = dict(compression)

    def negotiate_compression(self, timeout_s: float | None = None) -> dict[str, str]:
        """Adopt the per-stream compression the served model's manifest declares (metadata ``compression``), for
        the codecs both this machine and the server have; return the adopted map (streams left out go raw)."""
        meta = self.metadata(timeout_s)
        wanted = meta.get("compression") or {}
        both = set(available_codecs()) & set(meta.get("codecs") or ())
        adopted = {str(k): str(v) for k, v in wanted.items() if v in both} if isinstance(wanted, dict) else {}
        skipped = sorted(set(wanted) - set(adopted)) if isinstance(wanted, dict) else []
        if skipped:
            log.warning("streams %s stay uncompressed: their codec is missing on this side or the server", skipped)
        self.set_compression(adopted)
        return adopted

    def _call(
        self,
        kind: str,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        timeout_s: float | None,
        before_send: Callable[[], None] | None = None,
    ) -> Reply:
        budget_s = self.timeout_s if timeout_s is None else float(timeout_s)
        if budget_s <= 0:
            raise ConfigError(f"timeout_s must be positive seconds, got {budget_s}")
        with self._lock:
            if self._sock is None:
                raise ConfigError("PolicyClient is closed; create a new one")
            request_id = self._next_id
            self._next_id = (self._next_id + 1) % (2**63)
            t0 = time.monotonic_ns()
            t_send = self._send(kind, request_id, t0, budget_s, arrays, meta, before_send)
            reply, t_recv = self._await_reply(kind, request_id, t0 + int(budget_s * 1e9), budget_s)
            t_done = time.monotonic_ns()
            self._note_answer(t_done)
        self._raise_if_error(reply, kind, request_id)
        return self._reply(reply, request_id, t0, t_send, t_recv, t_done)

    def _send(
        self,
        kind: str,
        request_id: int,
        t0: int,
        budget_s: float,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        before_send: Callable[[], None] | None,
    ) -> int:
        """Encode and queue one request (caller holds the lock); return the monotonic ns it left."""
        assert self._sock is not None
        frames = encode(
            Message(
                kind=kind,
                id=request_id,
                robot=self.robot_id,
                model=self.model_id,
                t_send_ns=t0,
                timeout_ms=budget_s * 1e3,
                arrays=arrays,
                meta=meta,
            ),
            self.max_message_bytes,
            codecs=self.compression if kind == "infer" else None,
        )
        self._run_before_send(before_send)
        t_send = time.monotonic_ns()
        try:
            self._sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            self._reset()
            raise RequestTimeoutError(
                f"cannot queue request to {self.endpoint}: send queue full (server unreachable?)"
            ) from None
        return t_send

    def _await_reply(self, kind: str, request_id: int, deadline_ns: int, budget_s: float) -> tuple[Message, int]:
        """Wait for the answer to ``request_id`` (discarding stale ones) until ``deadline_ns``; return it and the
        monotonic ns it arrived. A timeout recreates the socket (the late answer must not be read later)."""
        assert self._sock is not None
        while True:
            remaining_ms = (deadline_ns - time.monotonic_ns()) / 1e6
            if remaining_ms <= 0 or not self._sock.poll(max(1, int(remaining_ms + 0.999)), zmq.POLLIN):
                self.timeouts += 1
                self._failures_since_answer += 1
                self._reset()
                raise RequestTimeoutError(
                    f"no reply from policy server {self.endpoint} within {budget_s * 1e3:.0f} ms for {kind} "
                    f"request {request_id}; is `robot-stack serve` running there and is the model fast enough?"
                )
            raw = self._sock.recv_multipart(copy=False)
            t_recv = time.monotonic_ns()
            try:
                reply = decode(raw, self.max_message_bytes)
            except ProtocolError:
                self._reset()  # a corrupt stream: start clean
                raise
            if reply.id == request_id:
                return reply, t_recv
            self.stale_replies += 1
            log.debug("discarded reply %d while waiting for %d", reply.id, request_id)

    def _raise_if_error(self, reply: Message, kind: str, request_id: int) -> None:
        if reply.kind == "error":
            err_type = ServerBusyError if reply.error_code == "busy" else ServerError
            err = err_type(
                f"policy server {self.endpoint} rejected {kind} request {request_id} "
                f"[{reply.error_code}]: {reply.error_reason}"
            )
            err.code = reply.error_code  # type: ignore[attr-defined]
            err.reason = reply.error_reason  # type: ignore[attr-defined]
            raise err
        if reply.kind != "reply":
            raise ProtocolError(f"expected a reply or error from the server, got kind {reply.kind!r}")

    def _reply(self, reply: Message, request_id: int, t0: int, t_send: int, t_recv: int, t_done: int) -> Reply:
        """The answer with where its time went; feeds the clock-offset estimate (NTP-style, lowest delay wins)."""
        timing = dict(reply.timing or {})
        server_ns = self._server_span_ns(timing, t_send, t_recv)
        return Reply(
            arrays=reply.arrays,
            meta=reply.meta,
            timing=CallTiming.measured(t0, t_send, t_recv, t_done, server_ns, timing),
            request_id=request_id,
            server_timing=timing,
        )
