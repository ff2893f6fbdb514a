"""Glue between the model runtime and the transport: the server handler, ``serve()``, and a subprocess entry.

``python -m robot_stack.policy.service --manifest models/reach.yaml --bind tcp://127.0.0.1:5555`` serves a model
and prints one line ``READY <endpoint>`` on stdout once bound, so that a parent process can wait for it.
"""

from __future__ import annotations

import argparse
import collections
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.clock import Clock, MonotonicClock
from robot_stack.errors import ConfigError, PolicyError
from robot_stack.policy.batching import batch_rows, group_compatible, split, stack
from robot_stack.policy.gpu_env import ENGINES
from robot_stack.policy.instruction import InstructionTokenizer
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.policy.rtc import RTC_PREFIX, RtcRequest, rtc_request
from robot_stack.policy.runtime import validate_arrays, validate_declared
from robot_stack.transport.admission import ClientGrant
from robot_stack.transport.protocol import DEFAULT_MAX_MESSAGE_BYTES, ArraySpec
from robot_stack.transport.server import MAX_TRACKED_CLIENTS, BatchItem, PolicyServer

__all__ = ["PolicyService", "check_declared", "load_server_keys", "main", "serve"]

log = logging.getLogger("robot_stack.policy.service")

#: Request meta keys echoed back in the reply (so the robot side can stamp the ActionChunk).
ECHO_META_KEYS = ("t_obs_ns", "episode", "step")


def check_declared(manifest: PolicyManifest, specs: Sequence[ArraySpec], accepts_rtc: bool) -> None:
    """Refuse (:class:`PolicyError`) declared request arrays that are not exactly ``manifest``'s request inputs
    (names, dtypes, shapes), allowing an ``rtc/prefix`` of at most ``horizon`` rows when ``accepts_rtc``."""
    declared = {s.name: (s.dtype, s.shape) for s in specs}
    if accepts_rtc and RTC_PREFIX in declared:
        dtype, shape = declared.pop(RTC_PREFIX)
        rows = shape[1] if len(shape) == 3 and shape[0] == 1 else (shape[0] if len(shape) == 2 else -1)
        if dtype != "float32" or not 1 <= rows <= manifest.horizon or shape[-1] != manifest.action_dim:
            raise PolicyError(
                f"model {manifest.model_id}: {RTC_PREFIX} must be float32 (P, {manifest.action_dim}) with "
                f"1 <= P <= {manifest.horizon}, declared {dtype} {tuple(shape)}"
            )
    validate_declared(manifest.request_inputs, declared, manifest.model_id)


class PolicyService:
    """A :class:`PolicyServer` handler that runs a policy backend (ONNX Runtime, TensorRT or torch; see
    :mod:`robot_stack.policy.backends`).

    Request arrays must be exactly the manifest's :attr:`~PolicyManifest.request_inputs` (names, dtypes, shapes);
    a language-conditioned manifest's instruction input is filled from the request meta text (``meta["task"]``,
    tokenized with the model's own tokenizer: :mod:`robot_stack.policy.instruction`). The reply carries every
    output plus meta ``{model_id, action_space, action_head, dt_s, horizon,
    control_rate_hz, provider}`` and the echoed request meta keys :data:`ECHO_META_KEYS`.

    **Micro-batching:** with ``max_batch > 1`` (default: the manifest's ``max_batch``) the server hands several
    robots' requests to :meth:`run_batch` at once; compatible ones share one model call. A request that fails
    validation fails alone. **Split rates:** with a ``backbone`` backend, the backbone runs for a robot only when
    that robot's cached backbone output is older than ``1 / manifest.backbone.rate_hz`` (or its batch size
    changed); the decoder runs on every request with the cached features. Reply meta then also holds
    ``backbone_ran`` (bool) and ``backbone_age_ms``.

    Args:
        policy: the main (decoder) model backend.
        backbone: the backbone backend, required iff the manifest declares a backbone.
        max_batch: override of ``policy.manifest.max_batch``.
        clock: time source of the backbone cache (default: the process's monotonic clock).
    """

    def __init__(
        self,
        policy: Any,
        backbone: Any | None = None,
        *,
        max_batch: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.policy = policy
        m: PolicyManifest = policy.manifest
        if (m.backbone is None) != (backbone is None):
            raise ConfigError(
                f"manifest {m.source or m.model_id} {'declares' if m.backbone else 'has no'} a backbone but "
                f"{'none' if backbone is None else 'one'} was given; use PolicyService.from_manifest()"
            )
        self.backbone = backbone
        self.manifest = m
        self.model_id = m.model_id
        self.max_batch = int(max_batch if max_batch is not None else m.max_batch)
        self._clock: Clock = clock or MonotonicClock()
        self._request_names = [t.name for t in m.request_inputs]
        self._feature_names = [t.name for t in m.backbone.outputs] if m.backbone else []
        self._decoder_direct = [t.name for t in m.inputs if t.name not in set(self._feature_names)]
        #: (client, robot) -> (time computed ns, backbone outputs): robot ids are the clients' choice, so one
        #: client's features are never served to another that happens to use the same robot id.
        self._cache: collections.OrderedDict[tuple[str, str], tuple[int, dict[str, np.ndarray]]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self._instruction = InstructionTokenizer(m.instruction) if m.instruction is not None else None
        self.backbone_runs = 0
        self.decoder_runs = 0
        self._meta: dict[str, Any] = {
            "model_id": m.model_id,
            "action_space": m.action_space,
            "action_head": m.action_head,
            "dt_s": m.dt_s,
            "horizon": m.horizon,
            "control_rate_hz": m.control_rate_hz,
            "provider": policy.provider,
        }

    @classmethod
    def from_manifest(
        cls,
        manifest: PolicyManifest,
        provider: str | None = None,
        *,
        strict: bool = False,
        threads: int | None = None,
        engine: str = "ort",
        clock: Clock | None = None,
        precision: str | None = None,
    ) -> PolicyService:
        """Load the main model (and the backbone, if declared) on ``engine`` — ``ort`` (ONNX Runtime; a GPU
        provider is gated), ``tensorrt`` (native engine) or ``torch`` (the manifest's torch program; the backbone,
        which has none, runs on ONNX Runtime) — behind the accuracy gate, falling back to ONNX Runtime with a
        logged reason on any failure (:func:`robot_stack.policy.backends.load_backend`)."""
        from robot_stack.policy.backends import load_backend

        if engine not in ENGINES:
            raise ConfigError(f"engine {engine!r} unknown; choose one of {ENGINES}")

        def load(man: PolicyManifest, eng: str) -> Any:
            return load_backend(man, eng, provider=provider, precision=precision, strict=strict, threads=threads).policy

        backbone = None
        if manifest.backbone is not None:
            backbone = load(manifest.backbone_manifest(), "ort" if engine == "torch" else engine)
        return cls(load(manifest, engine), backbone, clock=clock)

    def warmup(self) -> None:
        """Run each backend once on zeros so the first request does not pay for lazy initialisation."""
        for backend in (self.backbone, self.policy):
            if backend is not None:
                backend.warmup()

    # ------------------------------------------------------------------------------------------- requests
    @property
    def compression(self) -> dict[str, str]:
        """Request input -> the wire codec the manifest declares for it (the only codec the server accepts)."""
        return dict(self.manifest.compression)

    @property
    def accepts_rtc(self) -> bool:
        """Whether requests may carry a real-time-chunking prefix (a ``flow_matching:`` or ``vla:`` model with
        ``rtc: true``)."""
        return bool(getattr(self.policy, "accepts_rtc", False))

    def check_request(self, specs: Sequence[ArraySpec]) -> None:
        """Refuse (:class:`PolicyError`) a request whose *declared* arrays are not exactly the model's request
        inputs (names, dtypes, shapes) — plus, for a model that accepts real-time chunking, an optional
        ``rtc/prefix`` of at most ``horizon`` rows of the action's size; the server calls this before decoding
        anything."""
        check_declared(self.manifest, specs, self.accepts_rtc)

    def __call__(
        self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """One request outside the server (robot id ``""``); raises what :meth:`run_batch` would return."""
        result = self.run_batch([BatchItem("", arrays, meta, 0, None)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def run_batch(
        self, items: Sequence[BatchItem]
    ) -> list[tuple[dict[str, np.ndarray], dict[str, Any]] | BaseException]:
        """Answer several requests (at most one per robot); one result or exception per item, in order."""
        with self._lock:  # the backbone cache and the run counters are shared state
            return self._run_batch(items)

    def _run_batch(
        self, items: Sequence[BatchItem]
    ) -> list[tuple[dict[str, np.ndarray], dict[str, Any]] | BaseException]:
        results: list[Any] = [None] * len(items)
        ok: list[int] = []
        feeds: dict[int, dict[str, np.ndarray]] = {}
        rtc: dict[int, RtcRequest | None] = {}
        for i, item in enumerate(items):
            try:
                arrays, rtc[i] = self._split_rtc(item)
                validate_arrays(self.manifest.request_inputs, arrays, self.model_id)
                if self.max_batch > 1 or self.backbone is not None:
                    rows = batch_rows(arrays, self._request_names)
                    if rtc[i] is not None and rows != 1:
                        raise PolicyError(f"model {self.model_id}: {RTC_PREFIX} goes with a request of one row")
                feeds[i] = dict(arrays)
                ok.append(i)
            except PolicyError as exc:
                results[i] = exc
        if self._instruction is not None:
            ok = self._attach_instructions(items, ok, feeds, results)
        extra_meta: dict[int, dict[str, Any]] = {i: {} for i in ok}
        for i in ok:
            request_rtc = rtc[i]
            if request_rtc is not None:
                extra_meta[i]["rtc_delay_steps"] = request_rtc.delay_steps
                extra_meta[i]["rtc_prefix_steps"] = int(request_rtc.prefix.shape[0])
        if self.backbone is not None:
            ok = self._attach_features(items, ok, feeds, extra_meta, results)
        decoder_feeds = {i: {t.name: feeds[i][t.name] for t in self.manifest.inputs} for i in ok}
        rtc_rows = rtc if any(rtc[i] is not None for i in ok) else None
        for i, out in self._run_model(self.policy, decoder_feeds, rtc=rtc_rows).items():
            if isinstance(out, BaseException):
                results[i] = out
                continue
            reply_meta = {**self._meta, **extra_meta[i], "provider": self.policy.provider}
            for key in ECHO_META_KEYS:
                if key in items[i].meta:
                    reply_meta[key] = items[i].meta[key]
            results[i] = (out, reply_meta)
        return results

    def _split_rtc(self, item: BatchItem) -> tuple[Mapping[str, np.ndarray], RtcRequest | None]:
        """The request's model inputs and its real-time-chunking part (None without one; a model that does not
        accept it gets the prefix among its inputs and refuses it by name)."""
        if not self.accepts_rtc:
            return item.arrays, None
        m = self.manifest
        request = rtc_request(item.arrays, item.meta, m.horizon, m.action_dim, self.model_id)
        if request is None:
            return item.arrays, None
        return {k: v for k, v in item.arrays.items() if k != RTC_PREFIX}, request

    def _attach_instructions(
        self,
        items: Sequence[BatchItem],
        ok: list[int],
        feeds: dict[int, dict[str, np.ndarray]],
        results: list[Any],
    ) -> list[int]:
        """Fill the instruction input of every request from its meta text (tokenized); a request without a usable
        instruction fails alone."""
        assert self._instruction is not None
        spec = self._instruction.spec
        alive = []
        for i in ok:
            try:
                rows = batch_rows(items[i].arrays, self._request_names)
                feeds[i][spec.input] = self._instruction.encode_rows(items[i].meta.get(spec.meta_key), rows)
                alive.append(i)
            except PolicyError as exc:
                results[i] = exc
        return alive

    def _attach_features(
        self,
        items: Sequence[BatchItem],
        ok: list[int],
        feeds: dict[int, dict[str, np.ndarray]],
        extra_meta: dict[int, dict[str, Any]],
        results: list[Any],
    ) -> list[int]:
        """Add cached or fresh backbone outputs to each request's feed; return the items still alive."""
        assert self.manifest.backbone is not None and self.backbone is not None
        period = self.manifest.backbone.period_ns
        now = self._clock.now_ns()
        stale: dict[int, dict[str, np.ndarray]] = {}
        for i in ok:
            cached = self._cache.get((items[i].client, items[i].robot))
            rows = batch_rows(items[i].arrays, self._request_names)
            if cached is None or now - cached[0] >= period or batch_rows(cached[1], self._feature_names) != rows:
                stale[i] = {t.name: items[i].arrays[t.name] for t in self.manifest.backbone.inputs}
        for i, out in self._run_model(self.backbone, stale, backbone=True).items():
            if isinstance(out, BaseException):
                results[i] = out
                continue
            key = (items[i].client, items[i].robot)
            self._cache.pop(key, None)
            self._cache[key] = (now, {n: np.array(a) for n, a in out.items()})
            while len(self._cache) > MAX_TRACKED_CLIENTS:
                self._cache.popitem(last=False)
        alive = []
        for i in ok:
            if results[i] is not None:
                continue
            t_cached, features = self._cache[(items[i].client, items[i].robot)]
            feeds[i].update(features)
            extra_meta[i] = {"backbone_ran": i in stale, "backbone_age_ms": (now - t_cached) / 1e6}
            alive.append(i)
        return alive

    def _run_model(
        self,
        backend: Any,
        feeds: dict[int, dict[str, np.ndarray]],
        backbone: bool = False,
        rtc: Mapping[int, RtcRequest | None] | None = None,
    ) -> dict[int, dict[str, np.ndarray] | BaseException]:
        """Run ``backend`` on every feed: compatible feeds share one call when batching is on; when a shared call
        fails, its members are retried one by one so that only the culprit gets the error. ``rtc``: each feed's
        real-time-chunking prefix (one row each), for a flow-matching backend (``flow_matching:`` or ``vla:``)."""
        out: dict[int, dict[str, np.ndarray] | BaseException] = {}
        if not feeds:
            return out
        keys = list(feeds)
        names = [t.name for t in backend.manifest.inputs]
        groups = (
            group_compatible([feeds[k] for k in keys], names) if self.max_batch > 1 else [[j] for j in range(len(keys))]
        )
        for group in groups:
            members = [keys[j] for j in group]
            if len(members) > 1:
                feed, sizes = stack([feeds[k] for k in members], names)
                rows = None
                if rtc is not None:
                    rows = [r for k, size in zip(members, sizes, strict=True) for r in [rtc.get(k)] * size]
                try:
                    outputs = self._count_run(backend, feed, backbone, rows)
                    out.update(zip(members, split(outputs, sizes), strict=True))
                    continue
                except PolicyError:
                    log.debug("batched call of %d requests failed; retrying one by one", len(members))
            for k in members:
                try:
                    one = None if rtc is None or rtc.get(k) is None else [rtc[k]]
                    out[k] = self._count_run(backend, feeds[k], backbone, one)
                except PolicyError as exc:
                    out[k] = exc
        return out

    def _count_run(
        self, backend: Any, feed: dict[str, np.ndarray], backbone: bool, rtc: Sequence[Any] | None = None
    ) -> dict[str, np.ndarray]:
        if backbone:
            self.backbone_runs += 1
        else:
            self.decoder_runs += 1
        if rtc is not None and any(r is not None for r in rtc):
            return backend.run(feed, rtc=rtc)
        return backend.run(feed)

    def metadata(self) -> dict[str, Any]:
        """Manifest summary (inputs, outputs, request inputs, action space, rates, normalisation, compression,
        backbone) and the provider in use."""
        meta = {**self.manifest.summary(), "provider": self.policy.provider}
        if self.backbone is not None:
            meta["backbone_provider"] = self.backbone.provider
        return meta


def serve(
    manifest_path: str | Path,
    bind: str = "tcp://127.0.0.1:5555",
    provider: str | None = None,
    *,
    strict: bool = False,
    threads: int | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    on_ready: Callable[[str], None] | None = None,
    stop_event: threading.Event | None = None,
    curve_secret: str | Path | None = None,
    allow_dir: str | Path | None = None,
    engine: str = "ort",
    precision: str | None = None,
    openpi_port: int | None = None,
    openpi_host: str = "127.0.0.1",
    openpi_timeout_s: float = 1.0,
    openpi_api_key: str | None = None,
    on_openpi_ready: Callable[[str], None] | None = None,
) -> None:
    """Load the model and serve it until SIGINT/SIGTERM (or ``stop_event`` is set). Blocking.

    Args:
        manifest_path: the model's YAML manifest (or its ``.onnx`` with the YAML next to it).
        bind: ZeroMQ endpoint; ``tcp://127.0.0.1:*`` picks a free port.
        provider: ``cpu`` | ``cuda`` | ``tensorrt``; None = the manifest's preference.
        strict: fail instead of falling back to CPU when the provider is unavailable.
        threads: ONNX Runtime intra-op threads (None = all cores; use fewer when sharing a machine with the robot).
        on_ready: called with the bound endpoint once the server is accepting requests.
        stop_event: alternative to signals (e.g. when serving from a non-main thread).
        curve_secret: the server's ``.key_secret`` file (``robot-stack keys generate DIR --name server --server``);
            enables CURVE encryption and authentication.
        allow_dir: folder of allowed client ``.key`` files, each optionally with a ``<name>.robots`` file of the
            robot ids it may use (see :mod:`robot_stack.transport.keys`; needs ``curve_secret``); without it any
            client that knows the server's public key may connect.
        engine: ``ort`` (ONNX Runtime, ``provider`` picks the EP), ``tensorrt`` (native engine) or ``torch`` (the
            manifest's torch program); every GPU path is gated and falls back to ORT with a logged reason.
        precision: engine precision (TensorRT fp32/fp16/int8, default fp16; torch fp32/fp16/bf16; ORT TensorRT EP
            fp32/fp16), None = the engine's default.
        openpi_port: also speak openpi's websocket + msgpack-numpy protocol on this port (0 = any free one)
            through :class:`~robot_stack.transport.openpi.OpenPIGateway`, whose per-connection clients go through
            this server's admission (caps, deadlines of ``openpi_timeout_s``, latest-wins); with CURVE on, the
            gateway uses an ephemeral key of its own, allow-listed in memory. ``openpi_host``: where it listens
            (loopback unless told); ``openpi_api_key``: the key openpi clients must send (``api_key=...``).
        on_openpi_ready: called with the gateway's ``ws://`` endpoint once it listens.

    At start the backend check (:func:`robot_stack.policy.gpu_env.check_backends`) is logged: which path will run
    and why, and what is missing for the faster ones.
    """
    secret, allowed = load_server_keys(bind, curve_secret, allow_dir)
    gateway_kwargs: dict[str, Any] = {}
    if secret is not None and openpi_port is not None:
        import zmq

        gateway_kwargs, allowed = _gateway_identity(zmq.curve_public(secret), allowed)
    if openpi_port is not None and openpi_api_key is None and not _is_loopback(f"tcp://{openpi_host}:0"):
        log.warning(
            "openpi protocol on %s:%d without an api key: anyone who can reach it can use the model",
            openpi_host,
            openpi_port,
        )
    manifest = PolicyManifest.load(manifest_path)
    _log_backend_check(engine, provider, manifest, precision)
    service = PolicyService.from_manifest(
        manifest, provider, strict=strict, threads=threads, engine=engine, precision=precision
    )
    service.warmup()
    stop = stop_event or threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    server = PolicyServer(
        service, bind, max_message_bytes=max_message_bytes, curve_secret_key=secret, authorized_client_keys=allowed
    )
    gateway = None
    try:
        server.start()
        log.info(
            "serving %s on %s (%s, max_batch %d, CURVE %s)",
            manifest.model_id,
            server.endpoint,
            service.policy.provider,
            server.max_batch,
            "off" if secret is None else f"on, {len(allowed) if allowed else 'any'} client key(s)",
        )
        if openpi_port is not None:
            from robot_stack.transport.openpi import OpenPIGateway

            gateway = OpenPIGateway(
                server.endpoint,
                openpi_host,
                openpi_port,
                timeout_s=openpi_timeout_s,
                api_key=openpi_api_key,
                max_message_bytes=max_message_bytes,
                upstream_kwargs=gateway_kwargs,
            ).start()
            if on_openpi_ready is not None:
                on_openpi_ready(gateway.endpoint)
        if on_ready is not None:
            on_ready(server.endpoint)
        while not stop.wait(0.2):
            pass
        log.info("stopping: %s", server.stats())
    finally:
        if gateway is not None:
            gateway.close()
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _gateway_identity(server_public: bytes, allowed: dict[bytes, Any] | None) -> tuple[dict[str, Any], Any]:
    """An ephemeral CURVE identity for the openpi gateway's loopback clients, allow-listed in memory (any robot
    id); returns the gateway's client keyword arguments and the extended allow-list."""
    import zmq

    from robot_stack.transport.admission import ClientGrant

    public, secret_key = zmq.curve_keypair()
    if allowed is not None:
        allowed = {**allowed, public: ClientGrant("openpi-gateway", None)}
    kwargs = {"server_public_key": server_public, "client_secret_key": secret_key, "client_public_key": public}
    return kwargs, allowed


def load_server_keys(
    bind: str, curve_secret: str | Path | None, allow_dir: str | Path | None
) -> tuple[bytes | None, dict[bytes, ClientGrant] | None]:
    """The server's CURVE secret key and client allow-list from ``--curve-secret`` / ``--allow-dir`` (None = off);
    warns when a non-loopback ``bind`` runs without CURVE.

    Raises:
        ConfigError: ``allow_dir`` without ``curve_secret``, or an unreadable key file.
    """
    from robot_stack.transport.keys import load_allow_list, load_key_pair

    if allow_dir is not None and curve_secret is None:
        raise ConfigError("--allow-dir needs --curve-secret (client keys are checked by CURVE)")
    secret = load_key_pair(curve_secret).secret_key if curve_secret is not None else None
    allowed = load_allow_list(allow_dir) if allow_dir is not None else None
    if secret is None and not _is_loopback(bind):
        log.warning("serving on %s without CURVE: anyone who can reach it can use the model", bind)
    return secret, allowed


def _log_backend_check(engine: str, provider: str | None, manifest: PolicyManifest, precision: str | None) -> None:
    from robot_stack.policy.gpu_env import check_backends

    try:
        report = check_backends(engine, provider, manifest=manifest, precision=precision)
    except Exception as exc:  # a diagnostic must never stop the server from starting
        log.warning("backend check failed (%s: %s); loading anyway", type(exc).__name__, exc)
        return
    for line in report.lines():
        (log.info if report.ok else log.warning)("%s", line)


def _is_loopback(bind: str) -> bool:
    host = bind.split("://", 1)[-1].rsplit(":", 1)[0]
    return bind.startswith(("inproc://", "ipc://")) or host in ("127.0.0.1", "localhost", "[::1]", "::1")


def main(argv: Sequence[str] | None = None) -> int:
    """Subprocess entry: serve a manifest and print ``READY <endpoint>`` once bound."""
    parser = argparse.ArgumentParser(prog="python -m robot_stack.policy.service", description=__doc__)
    parser.add_argument("--manifest", required=True, help="model YAML manifest")
    parser.add_argument("--bind", default="tcp://127.0.0.1:5555", help="ZeroMQ endpoint (tcp://127.0.0.1:* = any)")
    parser.add_argument("--provider", default=None, choices=["cpu", "cuda", "tensorrt"])
    parser.add_argument("--strict", action="store_true", help="fail if the provider is unavailable")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all)")
    parser.add_argument("--engine", default="ort", choices=list(ENGINES), help="ONNX Runtime, native TRT or torch")
    parser.add_argument("--precision", default=None, help="fp32|fp16|int8 (TensorRT), fp32|fp16|bf16 (torch)")
    parser.add_argument("--curve-secret", help="server .key_secret file: enables CURVE")
    parser.add_argument("--allow-dir", help="folder of allowed client .key files (needs --curve-secret)")
    parser.add_argument("--openpi-port", type=int, default=None, help="also serve openpi's websocket protocol here")
    parser.add_argument("--openpi-host", default="127.0.0.1", help="where the openpi face listens")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    args = parser.parse_args(argv)
    from robot_stack.console import setup_logging

    setup_logging(1 if args.verbose else -1 if args.quiet else 0)
    from robot_stack.errors import RobotStackError

    try:
        serve(
            args.manifest,
            args.bind,
            args.provider,
            strict=args.strict,
            threads=args.threads,
            on_ready=lambda endpoint: print(f"READY {endpoint}", flush=True),
            curve_secret=args.curve_secret,
            allow_dir=args.allow_dir,
            engine=args.engine,
            precision=args.precision,
            openpi_port=args.openpi_port,
            openpi_host=args.openpi_host,
            on_openpi_ready=lambda endpoint: print(f"OPENPI {endpoint}", flush=True),
        )
    except RobotStackError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
