"""Fault injectors on the robot side: a lossy, slow network proxy, a misbehaving camera, an external push.

The policy-side faults (bad answers, slow inference, a skewed clock) live with the server process in
:mod:`robot_stack.hil.server`; :class:`ServerProcess` starts, kills and restarts that process and switches its
faults over a control socket.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import shutil
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import zmq

from robot_stack.cameras.base import Camera
from robot_stack.errors import CameraError, ConfigError, SimError, TransportError
from robot_stack.sim.world import SimWorld
from robot_stack.types import CameraModel, Frame

log = logging.getLogger("robot_stack.hil.faults")

__all__ = ["FaultyCamera", "NetworkProxy", "ServerProcess", "apply_push", "time_namespace_available"]

#: Most peers the proxy keeps a backend connection for (a client that timed out reconnects with a new identity).
_MAX_PEERS = 8
#: Messages held by the proxy at most (beyond that, new messages are dropped and counted).
_MAX_HELD = 2000


class NetworkProxy:
    """A ZeroMQ forwarder between policy clients (DEALER) and a policy server (ROUTER), with injected faults.

    Clients connect to :attr:`endpoint` instead of the server. Each message is held for ``delay_ms`` plus a
    uniform jitter in ``[-jitter_ms, +jitter_ms]`` (never negative) and then forwarded, or dropped with
    probability ``loss``; with ``partition`` every message both ways is dropped. Messages keep their order per
    direction (like TCP: jitter delays, never reorders). Loss is message loss — the worst case for a request/reply
    protocol; packet loss inside TCP only shows up as extra delay, which ``jitter_ms`` covers.

    One thread owns every socket; it polls at most every 5 ms and stops when :meth:`close` is called. Loopback
    only: ``bind`` and ``upstream`` must be ``tcp://127.0.0.1`` / ``localhost`` / ``ipc://`` / ``inproc://``.

    Args:
        upstream: the policy server's endpoint.
        bind: where clients connect (``tcp://127.0.0.1:*`` picks a free port).
        seed: seed of the jitter/loss generator.
    """

    def __init__(self, upstream: str, bind: str = "tcp://127.0.0.1:*", seed: int = 0) -> None:
        for ep in (upstream, bind):
            if not _is_local(ep):
                raise ConfigError(f"NetworkProxy: {ep!r} is not a loopback endpoint; the HIL proxy never leaves")
        self.upstream = upstream
        self._ctx = zmq.Context.instance()
        self._front = self._ctx.socket(zmq.ROUTER)
        self._front.setsockopt(zmq.LINGER, 0)
        self._front.bind(bind)
        self.endpoint: str = self._front.getsockopt_string(zmq.LAST_ENDPOINT)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._delay_ns = 0
        self._jitter_ns = 0
        self._loss = 0.0
        self._partition = False
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hil-network-proxy", daemon=True)
        self._thread.start()

    def set(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss: float = 0.0, partition: bool = False) -> None:
        """Change the link (thread-safe); applies to messages arriving from now on."""
        if delay_ms < 0 or jitter_ms < 0 or not 0.0 <= loss <= 1.0:
            raise ConfigError(
                f"NetworkProxy.set: need delay/jitter >= 0 ms and loss in [0, 1], got {delay_ms}, {jitter_ms}, {loss}"
            )
        with self._lock:
            self._delay_ns = int(delay_ms * 1e6)
            self._jitter_ns = int(jitter_ms * 1e6)
            self._loss = float(loss)
            self._partition = bool(partition)

    def close(self) -> None:
        """Stop the thread and close every socket. Idempotent."""
        self._stop.set()
        self._thread.join(5.0)

    def _release_time(self, now: int, last: int) -> int | None:
        """When a message arriving ``now`` leaves, or None to drop it."""
        with self._lock:
            if self._partition or (self._loss > 0 and self._rng.random() < self._loss):
                return None
            jitter = self._rng.uniform(-self._jitter_ns, self._jitter_ns) if self._jitter_ns else 0.0
            return max(last, now + max(0, int(self._delay_ns + jitter)))

    def _run(self) -> None:
        backends: dict[bytes, zmq.Socket] = {}  # client identity -> DEALER to the server (insertion = age)
        held: list[tuple[int, int, str, bytes, list[bytes]]] = []  # heap of (release_ns, seq, direction, peer, msg)
        last = {"up": 0, "down": 0}
        seq = 0
        poller = zmq.Poller()
        poller.register(self._front, zmq.POLLIN)

        def backend(peer: bytes) -> zmq.Socket:
            sock = backends.get(peer)
            if sock is None:
                if len(backends) >= _MAX_PEERS:
                    old_peer = next(iter(backends))
                    poller.unregister(backends[old_peer])
                    backends.pop(old_peer).close(0)
                sock = self._ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, 4)  # towards a dead server at most a few requests wait; more are dropped
                sock.setsockopt(zmq.RECONNECT_IVL, 50)
                sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
                sock.connect(self.upstream)
                backends[peer] = sock
                poller.register(sock, zmq.POLLIN)
            return sock

        def take(direction: str, peer: bytes, msg: list[bytes]) -> None:
            nonlocal seq
            now = time.monotonic_ns()
            release = self._release_time(now, last[direction])
            if release is None or len(held) >= _MAX_HELD:
                self.counts[f"dropped_{direction}"] += 1
                return
            last[direction] = release
            seq += 1
            heapq.heappush(held, (release, seq, direction, peer, msg))

        try:
            while not self._stop.is_set():
                timeout_ms = 5
                if held:
                    timeout_ms = max(0, min(5, (held[0][0] - time.monotonic_ns()) // 1_000_000))
                events = dict(poller.poll(timeout_ms))
                if self._front in events:
                    for _ in range(64):
                        try:
                            frames = self._front.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        take("up", frames[0], frames[1:])
                for peer, sock in list(backends.items()):
                    if sock in events:
                        for _ in range(64):
                            try:
                                take("down", peer, sock.recv_multipart(zmq.NOBLOCK))
                            except zmq.Again:
                                break
                now = time.monotonic_ns()
                while held and held[0][0] <= now:
                    _, _, direction, peer, msg = heapq.heappop(held)
                    try:
                        if direction == "up":
                            backend(peer).send_multipart(msg, zmq.NOBLOCK)
                        else:
                            self._front.send_multipart([peer, *msg], zmq.NOBLOCK)
                        self.counts[f"forwarded_{direction}"] += 1
                    except zmq.Again:
                        self.counts[f"unroutable_{direction}"] += 1  # server down / client gone
        finally:
            for sock in backends.values():
                sock.close(0)
            self._front.close(0)


def _is_local(endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "[::1]")


class FaultyCamera(Camera):
    """Wraps a real camera and corrupts its stream on demand (:attr:`mode`).

    Modes: None (pass through), ``"late"`` (each frame is delivered ``late_ms`` after its capture: the newest
    buffered frame at least that old), ``"drop"`` (the read fails like a driver timeout: :class:`CameraError`),
    ``"frozen"`` (the last good frame again, same sequence number and capture time, like a hung driver),
    ``"no_depth"`` (depth all zero, colour intact). Every delivered frame's fate is counted in :attr:`injected`.
    """

    def __init__(self, camera: Camera, history: int = 64) -> None:
        self.camera = camera
        self.mode: str | None = None
        self.late_ms = 400.0
        self.injected: Counter[str] = Counter()
        self._recent: deque[Frame] = deque(maxlen=history)
        self._last_good: Frame | None = None

    def start(self) -> None:
        self.camera.start()

    def stop(self) -> None:
        self.camera.stop()

    @property
    def model(self) -> CameraModel:
        return self.camera.model

    def set_mode(self, mode: str | None, late_ms: float = 400.0) -> None:
        """Switch the fault (None = healthy)."""
        if mode not in (None, "late", "drop", "frozen", "no_depth"):
            raise ConfigError(f"FaultyCamera: unknown mode {mode!r}; use late, drop, frozen, no_depth or None")
        self.mode, self.late_ms = mode, float(late_ms)

    def read(self) -> Frame:
        mode = self.mode
        if mode == "drop":
            self.injected["drop"] += 1
            raise CameraError("camera frame dropped: no frame arrived within the driver timeout (injected fault)")
        if mode == "frozen" and self._last_good is not None:
            self.injected["frozen"] += 1
            return self._last_good
        frame = self.camera.read()
        self._recent.append(frame)
        if mode == "late":
            self.injected["late"] += 1
            due = frame.t_capture_ns - int(self.late_ms * 1e6)
            old = [f for f in self._recent if f.t_capture_ns <= due]
            return old[-1] if old else self._recent[0]
        if mode == "no_depth":
            self.injected["no_depth"] += 1
            return replace(frame, depth=np.zeros_like(frame.depth))
        self._last_good = frame
        return frame


def apply_push(world: SimWorld, body: str, force_n: Sequence[float] | None) -> None:
    """Apply an external force (newtons, world = base frame) at ``body``'s centre of mass (``""``: the arm's hand,
    the parent link of its TCP); None removes it."""
    with world.lock:
        if not body:
            tcp = mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_BODY, world.embodiment.tcp_frame)
            body = world.model.body(int(world.model.body_parentid[tcp])).name
        body_id = mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_BODY, body)
        if body_id < 0:
            raise SimError(f"push: scene has no body {body!r} (leave body out to push the arm's hand)")
        world.data.xfrc_applied[body_id, :] = 0.0
        if force_n is not None:
            world.data.xfrc_applied[body_id, :3] = np.asarray(force_n, dtype=np.float64)


_NAMESPACE_OK: bool | None = None


def time_namespace_available() -> bool:
    """Whether ``unshare --time`` can give a child process its own monotonic clock offset (Linux >= 5.6)."""
    global _NAMESPACE_OK
    if _NAMESPACE_OK is None:
        _NAMESPACE_OK = False
        if shutil.which("unshare") is not None:
            try:
                proc = subprocess.run([*_unshare_prefix(1), "true"], capture_output=True, timeout=10)
                _NAMESPACE_OK = proc.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                _NAMESPACE_OK = False
    return _NAMESPACE_OK


def _unshare_prefix(offset_s: int) -> list[str]:
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--time", "--monotonic", str(int(offset_s))]


class ServerProcess:
    """The policy server in its own process (:mod:`robot_stack.hil.server`): start, SIGKILL, restart, faults.

    Args:
        manifest: the model manifest to serve.
        clock_skew_s: the server host's monotonic clock runs this far ahead. Whole seconds use a Linux time
            namespace (a really different clock) when ``unshare --time`` works; otherwise the server process
            shifts the clock its transport reads (``--clock-skew-s``).
        threads: ONNX Runtime intra-op threads.
    """

    def __init__(self, manifest: Path, clock_skew_s: float = 0.0, threads: int = 1) -> None:
        self.manifest = Path(manifest)
        self.clock_skew_s = float(clock_skew_s)
        self.threads = threads
        self.endpoint: str | None = None
        self.control: str | None = None
        self.skew_method = "none"
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0
        self._faults: dict[str, Any] = {}
        self._restart: threading.Thread | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        """Start (or restart, on the same endpoints) the server; block until it printed READY."""
        from robot_stack.policy.process import start_server

        prefix: list[str] = []
        extra = ["--threads", str(self.threads)]
        skew = self.clock_skew_s
        if skew:
            if float(skew).is_integer() and skew > 0 and time_namespace_available():
                prefix, self.skew_method = _unshare_prefix(int(skew)), "time_namespace"
            else:
                extra += ["--clock-skew-s", repr(skew)]
                self.skew_method = "transport_clock_shift"
        if self.control is not None:
            extra += ["--control", self.control]
        proc, endpoint = start_server(
            self.manifest,
            "cpu",
            timeout_s=timeout_s,
            module="robot_stack.hil.server",
            bind=self.endpoint,
            extra_args=extra,
            prefix=prefix,
        )
        ready = proc.stdout.readline().strip() if proc.stdout is not None else ""
        if not ready.startswith("CONTROL "):
            proc.kill()
            raise TransportError(f"HIL server did not report its control endpoint (got {ready!r})")
        self.proc, self.endpoint, self.control = proc, endpoint, ready.split()[1]
        self.starts += 1
        if self._faults:
            self.set_faults(self._faults)
        log.info(
            "HIL policy server pid %d on %s (start %d, clock skew %s)",
            proc.pid,
            endpoint,
            self.starts,
            self.skew_method,
        )

    def kill(self) -> None:
        """SIGKILL the server (no goodbye: like a crash or a power cut of the GPU box)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            log.warning("HIL: policy server pid %d killed", self.proc.pid)

    def restart_in_background(self) -> None:
        """Start the server again on the same endpoints in a thread (the control loop keeps running)."""
        self._restart = threading.Thread(target=self.start, name="hil-server-restart", daemon=True)
        self._restart.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def set_faults(self, faults: Mapping[str, Any], timeout_s: float = 2.0) -> None:
        """Switch the server's answer faults (``{}`` = healthy); remembered across restarts."""
        self._faults = dict(faults)
        if not self.alive or self.control is None:
            return
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.control)
            sock.send_json(self._faults)
            if not sock.poll(int(timeout_s * 1e3)):
                raise TransportError(f"HIL server control {self.control} did not answer within {timeout_s} s")
            answer = sock.recv_json()
            if not isinstance(answer, dict) or not answer.get("ok"):
                raise ConfigError(f"HIL server refused faults {self._faults}: {answer}")
        finally:
            sock.close(0)

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL) and any restart in flight."""
        from robot_stack.policy.process import stop_server

        if self._restart is not None:
            self._restart.join(60)
        if self.proc is not None:
            stop_server(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
