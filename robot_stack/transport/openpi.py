"""openpi's policy protocol, both ways: websocket + msgpack-numpy, as ``openpi_client.WebsocketClientPolicy`` speaks it.

The protocol (openpi ``serving/websocket_policy_server.py`` and ``openpi_client``): the client opens a websocket; the
server sends one binary message, its **metadata** (a msgpack map); then each client message is an observation (a
msgpack map whose numpy arrays are maps ``{b"__ndarray__": True, b"data", b"dtype", b"shape"}``) and the server
answers with the action map (``actions`` ...) or, on failure, a **text** message (the client raises). There is no
request id, deadline, health request or clock: one request at a time per connection.

* :class:`OpenPIGateway` — ``robot-stack serve --openpi-port PORT``: a websocket face on a running robot-stack server.
  Each websocket connection gets its own :class:`~robot_stack.transport.client.PolicyClient` to the ZeroMQ server
  on loopback (robot id ``openpi-<n>``), so every server guard applies unchanged: request caps, the model's
  declared arrays and dtypes, latest-wins, queue caps (``busy``), deadlines (``--openpi-timeout``, sent as the
  request deadline), CURVE. Observation keys may be flat (``front/rgb``) or nested maps (``{"observation":
  {"state": ...}}``, joined with ``/``); a leading ``observation/`` is dropped when the rest names a model input.
  Replies carry every model output (``actions`` for a continuous head), the served meta (``model_id``,
  ``action_head``, ``horizon``, ``dt_s`` ...) and ``server_timing`` (``infer_ms``, ``queue_ms``, ``server_ms`` and
  the gateway's receive/reply clock stamps ``t_recv_ns`` / ``t_reply_ns``). An ``Authorization: Api-Key KEY`` header
  is *checked* when ``api_key`` is set (openpi's own server accepts any).
* :class:`OpenPIClient` — the robot side using a remote openpi-protocol server as its :class:`~robot_stack.cycle
  .ports.PolicyEndpoint` (``policy.endpoint: ws://host:8000``): the same per-call deadline (the connection is
  dropped and reopened after a timeout, so a late answer is never taken for a newer one), the same ``before_send``
  age check right before the bytes leave, payload caps both ways, typed errors; server clock offset estimated from
  ``server_timing`` stamps when the server sends them (robot-stack's gateway does; openpi's server does not).

Decoding is strict (never pickle, never object arrays): dtypes bool / int / uint / float of 1-8 bytes only, the
byte count must match the shape, maps at most :data:`MAX_KEYS` entries, messages at most ``max_message_bytes``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import numpy as np

from robot_stack.errors import (
    ConfigError,
    PayloadTooLargeError,
    ProtocolError,
    RequestTimeoutError,
    RobotStackError,
    ServerError,
    TransportError,
)
from robot_stack.transport.answers import AnswerTracking
from robot_stack.transport.client import CallTiming, PolicyClient, Reply
from robot_stack.transport.protocol import DEFAULT_MAX_MESSAGE_BYTES, unpack_capped

__all__ = ["MAX_KEYS", "OpenPIClient", "OpenPIGateway", "flatten", "pack", "unpack"]

log = logging.getLogger("robot_stack.transport.openpi")

#: Most entries one map of a message may have (observations have a handful).
MAX_KEYS = 256
_DTYPE_RE = re.compile(r"^[<>|=]?[biuf][1248]$")
_MAX_DIMS = 8


# ------------------------------------------------------------------------------------------------- codec


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise ProtocolError(f"array dtype {obj.dtype} cannot be sent (bool, int, uint, float only)")
        arr = np.ascontiguousarray(obj)
        return {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": arr.shape}
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in "biuf":
            raise ProtocolError(f"scalar dtype {obj.dtype} cannot be sent")
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise ProtocolError(f"cannot pack {type(obj).__name__} (arrays, numbers, strings, lists and maps only)")


_packers = threading.local()


def pack(obj: Mapping[str, Any]) -> bytes:
    """msgpack with numpy arrays as openpi's ``msgpack_numpy`` writes them (readable by ``openpi_client``). One
    packer per thread, reused: its buffer is kept between messages (4x faster than ``packb`` on 2.5 MB)."""
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(default=_pack_default, use_bin_type=True)
    try:
        return packer.pack(obj)
    except BaseException:
        packer.reset()
        raise


def _check_dtype(raw: Any) -> np.dtype:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if not _DTYPE_RE.match(text):
        raise ProtocolError(f"array dtype {text!r} refused (bool, int, uint or float of 1-8 bytes only)")
    return np.dtype(text)


def _hook(obj: dict[Any, Any]) -> Any:
    if len(obj) > MAX_KEYS:
        raise ProtocolError(f"a map of {len(obj)} entries (at most {MAX_KEYS})")
    if b"__ndarray__" in obj:
        try:
            dtype = _check_dtype(obj[b"dtype"])
            shape = tuple(int(d) for d in obj[b"shape"])
            data = obj[b"data"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed array map ({type(exc).__name__}: {exc})") from exc
        if len(shape) > _MAX_DIMS or any(d < 0 for d in shape) or not isinstance(data, bytes):
            raise ProtocolError(f"malformed array: shape {shape}, data {type(data).__name__}")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(data) != expected:
            raise ProtocolError(f"array of shape {shape} {dtype} needs {expected} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj:
        dtype = _check_dtype(obj.get(b"dtype"))
        value = obj.get(b"data")
        if not isinstance(value, (bool, int, float)):
            raise ProtocolError(f"malformed numpy scalar {value!r}")
        return dtype.type(value)
    return obj


def unpack(data: bytes, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Any:
    """Decode one message strictly (see the module docstring); ProtocolError / PayloadTooLargeError otherwise."""
    return unpack_capped(
        data,
        max_message_bytes,
        "msgpack-numpy message",
        object_hook=_hook,
        strict_map_key=False,
        max_array_len=MAX_KEYS * 64,
        max_map_len=MAX_KEYS,
    )


def flatten(obj: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Nested maps joined into ``a/b`` keys (``{"observation": {"state": x}}`` -> ``{"observation/state": x}``)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key.decode() if isinstance(key, bytes) else key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def _split(flat: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays (and numpy scalars) vs plain values (meta)."""
    arrays, meta = {}, {}
    for key, value in flat.items():
        if isinstance(value, np.ndarray):
            arrays[key] = value
        elif isinstance(value, np.generic):
            arrays[key] = np.asarray(value)
        else:
            meta[key] = value
    return arrays, meta


# ------------------------------------------------------------------------------------------------ robot side


class OpenPIClient(AnswerTracking):
    """A :class:`~robot_stack.cycle.ports.PolicyEndpoint` talking to an openpi-protocol websocket server.

    Args:
        endpoint: ``ws://host:port`` (or ``wss://``).
        robot_id: sent in each observation's meta as ``robot`` (informative; openpi has no robot ids).
        timeout_s: default per-call budget, seconds (connect + send + answer).
        api_key: sent as ``Authorization: Api-Key KEY`` (openpi's convention).
        max_message_bytes: cap on what is sent and received.
        defaults: meta used when neither the reply nor the server's metadata says (e.g. ``{"action_space":
            "ee_delta_xyz", "dt_s": 0.1}`` for a server that sends bare ``actions``).
    """

    _server_label = "openpi server"
    _log = log

    def __init__(
        self,
        endpoint: str,
        robot_id: str = "openpi",
        *,
        timeout_s: float = 1.0,
        api_key: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        defaults: Mapping[str, Any] | None = None,
        **_ignored: Any,
    ) -> None:
        if not endpoint.startswith(("ws://", "wss://")):
            raise ConfigError(f"an openpi endpoint is ws://HOST:PORT, got {endpoint!r}")
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive seconds, got {timeout_s}")
        if _ignored:
            raise ConfigError(
                f"{sorted(_ignored)} do not apply to an openpi websocket endpoint (no CURVE: use a TLS proxy or "
                "robot-stack's ZeroMQ endpoint)"
            )
        self.endpoint = endpoint
        self.robot_id = robot_id
        self.timeout_s = float(timeout_s)
        self.max_message_bytes = int(max_message_bytes)
        self._headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self._defaults = dict(defaults or {})
        self._lock = threading.Lock()
        self._ws: Any = None
        self._ws_stack: contextlib.ExitStack | None = None
        self._server_metadata: dict[str, Any] = {}
        self._init_answer_tracking()
        self._next_id = 1
        self.timeouts = 0
        self.stale_replies = 0
        self._closed = False

    # ------------------------------------------------------------------------------------------- connection
    def _connect(self, deadline_ns: int) -> Any:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        budget = max(0.001, (deadline_ns - time.monotonic_ns()) / 1e9)
        stack = contextlib.ExitStack()  # connect() is a context manager (websockets >= 17 wants it used as one)
        try:
            ws = stack.enter_context(
                connect(
                    self.endpoint,
                    compression=None,
                    max_size=self.max_message_bytes,
                    open_timeout=budget,
                    additional_headers=self._headers,
                )
            )
            self._ws, self._ws_stack = ws, stack
            raw = ws.recv(timeout=max(0.001, (deadline_ns - time.monotonic_ns()) / 1e9))
        except TimeoutError:
            self._fail()
            raise RequestTimeoutError(
                f"openpi server {self.endpoint} did not connect and send its metadata within {budget * 1e3:.0f} ms"
            ) from None
        except (OSError, WebSocketException) as exc:
            self._fail()
            raise TransportError(f"cannot reach openpi server {self.endpoint}: {exc}") from exc
        if isinstance(raw, str):
            self._drop()
            raise ProtocolError(f"openpi server {self.endpoint} sent text instead of its metadata: {raw[:200]}")
        meta = unpack(raw, self.max_message_bytes)
        self._server_metadata = flatten(meta) if isinstance(meta, Mapping) else {}
        # keep nested structures the summary uses (lists of input specs) as they were
        if isinstance(meta, Mapping):
            self._server_metadata.update({k: v for k, v in meta.items() if isinstance(k, str)})
        return ws

    def _fail(self) -> None:
        self._failures_since_answer += 1
        self._drop()

    def _drop(self) -> None:
        if self._ws_stack is not None:
            try:
                self._ws_stack.close()
            except Exception:  # already broken
                log.debug("closing a broken openpi connection", exc_info=True)
        self._ws, self._ws_stack = None, None

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            self._closed = True
            self._drop()

    def __enter__(self) -> OpenPIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------- calls
    def metadata(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The metadata the server sent on connect (connects if needed)."""
        with self._lock:
            if self._ws is None:
                self._connect(time.monotonic_ns() + int((timeout_s or self.timeout_s) * 1e9))
            return dict(self._server_metadata)

    def health(self, timeout_s: float | None = None) -> dict[str, Any]:
        """openpi has no health request: (re)connecting and reading the metadata is the check."""
        t0 = time.monotonic_ns()
        meta = self.metadata(timeout_s)
        return {"status": "connected", "model": meta.get("model_id"), "round_trip_ms": (time.monotonic_ns() - t0) / 1e6}

    def sync_clock(self, samples: int = 8, timeout_s: float | None = None) -> int:
        """The current offset estimate (from earlier replies' stamps), 0 when there is none yet: the protocol has
        no clock request, replies refine the estimate as they come."""
        return self.clock_offset_ns or 0

    def infer(
        self,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> Reply:
        """Send one observation, wait for the actions; same contract as :meth:`PolicyClient.infer`.

        Raises:
            StaleObservationError: (from ``before_send``) nothing was sent.
            RequestTimeoutError: no answer within the budget (the connection is dropped and reopened next call).
            ServerError: the server answered with a text (error) message.
            TransportError / ProtocolError / PayloadTooLargeError: unreachable, malformed, too large.
        """
        budget_s = self.timeout_s if timeout_s is None else float(timeout_s)
        if budget_s <= 0:
            raise ConfigError(f"timeout_s must be positive seconds, got {budget_s}")
        from websockets.exceptions import WebSocketException

        with self._lock:
            if self._closed:
                raise ConfigError("OpenPIClient is closed; create a new one")
            t0 = time.monotonic_ns()
            deadline = t0 + int(budget_s * 1e9)
            request_id = self._next_id
            self._next_id += 1
            body: dict[str, Any] = dict(arrays)
            for key, value in (meta or {}).items():
                if isinstance(value, (bool, int, float, str)) and key not in body:
                    body[key] = value
            data = pack(body)
            if len(data) > self.max_message_bytes:
                raise PayloadTooLargeError(
                    f"observation of {len(data)} bytes exceeds the cap of {self.max_message_bytes} bytes"
                )
            ws = self._ws or self._connect(deadline)
            self._run_before_send(before_send)
            t_send = time.monotonic_ns()
            try:
                ws.send(data)
                raw = ws.recv(timeout=max(0.0, (deadline - time.monotonic_ns()) / 1e9))
            except TimeoutError:
                self.timeouts += 1
                self._fail()
                raise RequestTimeoutError(
                    f"no answer from openpi server {self.endpoint} within {budget_s * 1e3:.0f} ms (request "
                    f"{request_id}); the connection is reopened for the next request"
                ) from None
            except (OSError, WebSocketException) as exc:
                self._fail()
                raise TransportError(f"openpi server {self.endpoint} connection lost: {exc}") from exc
            t_recv = time.monotonic_ns()
            if isinstance(raw, str):
                self._note_answer(t_recv)
                raise ServerError(f"openpi server {self.endpoint} refused request {request_id}: {raw[:500]}")
            decoded = unpack(raw, self.max_message_bytes)
            t_done = time.monotonic_ns()
            self._note_answer(t_done)
        if not isinstance(decoded, Mapping):
            raise ProtocolError(f"openpi reply is a {type(decoded).__name__}, expected a map")
        return self._reply(decoded, request_id, t0, t_send, t_recv, t_done)

    def _reply(
        self, decoded: Mapping[str, Any], request_id: int, t0: int, t_send: int, t_recv: int, t_done: int
    ) -> Reply:
        timing_raw = decoded.get("server_timing")
        timing = dict(timing_raw) if isinstance(timing_raw, Mapping) else {}
        flat = flatten({k: v for k, v in decoded.items() if k not in ("server_timing", "policy_timing")})
        arrays, reply_meta = _split(flat)
        meta: dict[str, Any] = {**self._defaults}
        meta.update(
            {
                k: self._server_metadata[k]
                for k in ("model_id", "action_space", "action_head", "dt_s", "horizon", "control_rate_hz", "provider")
                if k in self._server_metadata
            }
        )
        meta.update(reply_meta)
        if "horizon" not in meta and "actions" in arrays and arrays["actions"].ndim >= 1:
            meta["horizon"] = int(arrays["actions"].shape[0])
        stamped = "t_recv_ns" in timing and "t_reply_ns" in timing
        server_ns = self._server_span_ns(timing, t_send, t_recv)
        if not stamped and "server_ms" in timing:
            server_ns = int(float(timing["server_ms"]) * 1e6)
        return Reply(
            arrays={k: _readonly(v) for k, v in arrays.items()},
            meta=meta,
            timing=CallTiming.measured(t0, t_send, t_recv, t_done, server_ns, timing),
            request_id=request_id,
            server_timing=timing,
        )


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


# ------------------------------------------------------------------------------------------------ server side


class OpenPIGateway:
    """openpi's websocket protocol in front of a robot-stack ZeroMQ server (see the module docstring).

    Args:
        upstream: the ZeroMQ endpoint of the policy server (usually loopback, same process or host).
        host, port: where to listen (``127.0.0.1`` unless told; port 0 picks a free one).
        timeout_s: per-request budget, sent upstream as the request deadline.
        api_key: require ``Authorization: Api-Key <api_key>`` (None: no check; only sensible on loopback).
        max_message_bytes: websocket message cap (the upstream cap still applies).
        upstream_kwargs: extra :class:`PolicyClient` arguments (CURVE keys when the server requires them).
    """

    def __init__(
        self,
        upstream: str,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        timeout_s: float = 1.0,
        api_key: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        upstream_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.upstream = upstream
        self.host = host
        self.port = int(port)
        self.timeout_s = float(timeout_s)
        self.api_key = api_key
        self.max_message_bytes = int(max_message_bytes)
        self._upstream_kwargs = dict(upstream_kwargs or {})
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._metadata: dict[str, Any] | None = None
        self._request_names: set[str] = set()
        self.stats: dict[str, int] = {"connections": 0, "requests": 0, "replies": 0, "errors": 0, "refused_auth": 0}
        self._stats_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def start(self) -> OpenPIGateway:
        """Fetch the model's metadata upstream, bind, serve in a thread; return self (``port`` is the bound one)."""
        from websockets.sync.server import serve

        with PolicyClient(
            self.upstream, "openpi-gateway", timeout_s=max(self.timeout_s, 5.0), **self._upstream_kwargs
        ) as c:
            md = c.metadata()
        self._request_names = {str(t["name"]) for t in md.get("request_inputs") or md.get("inputs") or []}
        self._metadata = {**md, "protocol": "openpi websocket + msgpack-numpy (robot-stack gateway)"}
        self._server = serve(
            self._handle,
            self.host,
            self.port,
            compression=None,
            max_size=self.max_message_bytes,
            process_request=self._authorize if self.api_key else None,
        )
        self.port = int(self._server.socket.getsockname()[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="openpi-gateway", daemon=True)
        self._thread.start()
        log.info(
            "openpi protocol on %s -> %s (api key %s)",
            self.endpoint,
            self.upstream,
            "required" if self.api_key else "off",
        )
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> OpenPIGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _authorize(self, connection: Any, request: Any) -> Any:
        import hmac

        got = request.headers.get("Authorization", "")
        if not hmac.compare_digest(got.encode(), f"Api-Key {self.api_key}".encode()):
            self._count("refused_auth")
            log.warning("openpi connection from %s refused: missing or wrong api key", connection.remote_address)
            return connection.respond(401, "missing or wrong api key (Authorization: Api-Key ...)\n")
        return None

    def _names(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        """Drop a leading ``observation/`` where the rest names a model input (openpi's usual key layout)."""
        out = {}
        for key, value in flat.items():
            short = key.removeprefix("observation/")
            out[short if short != key and short in self._request_names and key not in self._request_names else key] = (
                value
            )
        return out

    def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        n = next(self._ids)
        self._count("connections")
        robot = f"openpi-{n}"
        try:
            client = PolicyClient(self.upstream, robot, timeout_s=self.timeout_s, **self._upstream_kwargs)
        except RobotStackError as exc:
            ws.send(f"gateway cannot reach the policy server: {exc}")
            return
        try:
            ws.send(pack(self._metadata or {}))
            while True:
                try:
                    raw = ws.recv()
                except ConnectionClosed:
                    return
                t_recv = time.monotonic_ns()
                self._count("requests")
                try:
                    answer = self._answer(client, raw, t_recv)
                except RobotStackError as exc:
                    self._count("errors")
                    ws.send(f"{type(exc).__name__}: {exc}")
                    continue
                ws.send(answer)
                self._count("replies")
        except ConnectionClosed:
            return
        finally:
            client.close()

    def _answer(self, client: PolicyClient, raw: Any, t_recv: int) -> bytes:
        if isinstance(raw, str):
            raise ProtocolError("expected a binary msgpack observation, got a text message")
        obs = unpack(raw, self.max_message_bytes)
        if not isinstance(obs, Mapping):
            raise ProtocolError(f"an observation is a map, got {type(obs).__name__}")
        arrays, meta = _split(self._names(flatten(obs)))
        meta = {k: v for k, v in meta.items() if isinstance(v, (bool, int, float, str))}
        reply = client.infer(arrays, meta)
        tm = reply.timing
        out: dict[str, Any] = {**{k: np.asarray(v) for k, v in reply.arrays.items()}}
        out.update({k: v for k, v in reply.meta.items() if isinstance(v, (bool, int, float, str)) and k not in out})
        out["server_timing"] = {
            "infer_ms": tm.infer_ms,
            "queue_ms": tm.queue_ms,
            "server_ms": tm.server_ms,
            "upstream_round_trip_ms": tm.round_trip_ms,
            "t_recv_ns": t_recv,
            "t_reply_ns": time.monotonic_ns(),
        }
        return pack(out)
