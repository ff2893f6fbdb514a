"""The policy server of hardware-in-the-loop runs: the real model service, with faults switched on from outside.

``python -m robot_stack.hil.server --manifest M --bind tcp://127.0.0.1:P [--control tcp://127.0.0.1:C]
[--clock-skew-s S]`` loads the manifest into the real :class:`~robot_stack.policy.service.PolicyService`
(ONNX Runtime), wraps it in :class:`FaultInjectingService` and serves it with the real
:class:`~robot_stack.transport.server.PolicyServer`. It prints ``READY <endpoint>`` and then
``CONTROL <endpoint>`` on stdout; the control socket (REP, loopback) takes a JSON object of faults
(``{"mode": "nan"}``, ``{"mode": "slow", "sleep_ms": 250}``, ``{}`` = healthy) and answers ``{"ok": true}``.

``--clock-skew-s`` shifts the monotonic clock the transport stamps its timing with, for hosts where a Linux time
namespace (the harness's first choice, a really different clock for the whole process) is unavailable.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zmq

from robot_stack.errors import ConfigError, RobotStackError

log = logging.getLogger("robot_stack.hil.server")

__all__ = ["FaultInjectingService", "main"]

#: Longest injected inference delay, ms (keeps every handler call bounded).
MAX_SLEEP_MS = 5000.0


class FaultInjectingService:
    """A server handler around a real policy service that corrupts or delays its answers on demand.

    Modes (``set_faults({"mode": ...})``), applied to the ``actions`` output ((H, 3) float32 ee_delta_xyz, m):

    * ``nan`` / ``inf``: one step of the chunk becomes NaN / +Inf;
    * ``out_of_range``: every step 5 m away (no arm reaches it);
    * ``jump``: steps alternate by ``amplitude_m`` sideways (reachable, wildly jumping);
    * ``reach``: steps walk the TCP toward ``target`` (base frame, m) at ``speed_m_per_step``, ignoring the task
      (drives the arm to the workspace edge and toward its joint limits);
    * ``slow``: the answer is correct but takes ``sleep_ms`` longer (a slow model).

    Args:
        inner: the real handler (e.g. :class:`~robot_stack.policy.service.PolicyService`).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_id = str(getattr(inner, "model_id", ""))
        self._faults: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.injected = 0
        self._flip = 1.0

    def set_faults(self, faults: Mapping[str, Any]) -> None:
        """Replace the active faults (thread-safe). Raises :class:`ConfigError` for an unknown mode."""
        mode = faults.get("mode")
        if mode not in (None, "nan", "inf", "out_of_range", "jump", "reach", "slow"):
            raise ConfigError(f"unknown policy fault mode {mode!r}")
        if mode == "reach" and faults.get("target") is None:
            raise ConfigError("policy fault 'reach' needs target: [x, y, z] metres")
        with self._lock:
            self._faults = dict(faults)

    def metadata(self) -> dict[str, Any]:
        fn = getattr(self.inner, "metadata", None)
        return dict(fn()) if callable(fn) else {}

    def __call__(
        self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> tuple[Mapping[str, np.ndarray], Mapping[str, Any]]:
        with self._lock:
            faults = dict(self._faults)
        mode = faults.get("mode")
        if mode == "slow":
            time.sleep(min(float(faults.get("sleep_ms", 250.0)), MAX_SLEEP_MS) / 1e3)
        out, out_meta = self.inner(arrays, meta)
        if mode in (None, "slow") or "actions" not in out:
            return out, out_meta
        actions = np.array(out["actions"], dtype=np.float32)
        horizon = actions.shape[0]
        if mode == "nan":
            actions[horizon // 2, :] = np.nan
        elif mode == "inf":
            actions[horizon // 2, 0] = np.inf
        elif mode == "out_of_range":
            actions[:] = np.float32(5.0)
        elif mode == "jump":
            amp = float(faults.get("amplitude_m", 0.15))
            self._flip = -self._flip
            signs = self._flip * np.where(np.arange(horizon) % 2 == 0, 1.0, -1.0)
            actions[:, 1] += (amp * signs).astype(np.float32)
        elif mode == "reach":
            tcp = np.asarray(arrays["state"], dtype=np.float64)[7:10]
            to_go = np.asarray(faults["target"], dtype=np.float64) - tcp
            dist = float(np.linalg.norm(to_go))
            steps = np.arange(1, horizon + 1) * float(faults.get("speed_m_per_step", 0.04))
            frac = np.minimum(1.0, steps / dist) if dist > 1e-9 else np.zeros(horizon)
            actions = (frac[:, None] * to_go[None, :]).astype(np.float32)
        self.injected += 1
        return {**out, "actions": actions}, {**out_meta, "hil_fault": mode}


class _SkewedTime(types.SimpleNamespace):
    """The ``time`` module with ``monotonic_ns`` shifted by a fixed offset (a different host's clock)."""

    def __init__(self, offset_ns: int) -> None:
        super().__init__()
        self._offset_ns = offset_ns

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def monotonic_ns(self) -> int:
        return time.monotonic_ns() + self._offset_ns


def _control_loop(sock: zmq.Socket, service: FaultInjectingService, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            if not sock.poll(200):
                continue
            try:
                request = sock.recv_json()
                if not isinstance(request, dict):
                    raise ConfigError(f"expected a JSON object of faults, got {type(request).__name__}")
                service.set_faults(request)
                log.info("faults now %s", request or "off")
                sock.send_json({"ok": True})
            except (RobotStackError, ValueError) as exc:
                sock.send_json({"ok": False, "error": str(exc)})
    finally:
        sock.close(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a manifest with fault injection; print ``READY <endpoint>`` and ``CONTROL <endpoint>``."""
    parser = argparse.ArgumentParser(prog="python -m robot_stack.hil.server", description=__doc__)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--bind", default="tcp://127.0.0.1:*")
    parser.add_argument("--control", default="tcp://127.0.0.1:*", help="loopback REP endpoint for fault control")
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda", "tensorrt"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock-skew-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    from robot_stack.policy.manifest import PolicyManifest
    from robot_stack.policy.service import PolicyService
    from robot_stack.transport import server as transport_server
    from robot_stack.transport.server import PolicyServer

    if args.clock_skew_s:
        transport_server.time = _SkewedTime(int(args.clock_skew_s * 1e9))  # type: ignore[assignment]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        inner = PolicyService.from_manifest(PolicyManifest.load(args.manifest), args.provider, threads=args.threads)
        inner.warmup()
        service = FaultInjectingService(inner)
        server = PolicyServer(service, args.bind)
    except RobotStackError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 1
    control = zmq.Context.instance().socket(zmq.REP)
    control.setsockopt(zmq.LINGER, 0)
    control.bind(args.control)
    control_endpoint = control.getsockopt_string(zmq.LAST_ENDPOINT)
    thread = threading.Thread(target=_control_loop, args=(control, service, stop), name="hil-control", daemon=True)
    try:
        server.start()
        thread.start()
        print(f"READY {server.endpoint}", flush=True)
        print(f"CONTROL {control_endpoint}", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        stop.set()
        thread.join(2.0)
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
