"""Glue between the model runtime and the transport: the server handler, ``serve()``, and a subprocess entry.

``python -m robot_stack.policy.service --manifest models/reach.yaml --bind tcp://127.0.0.1:5555`` serves a model
and prints one line ``READY <endpoint>`` on stdout once bound, so that a parent process can wait for it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.policy.manifest import PolicyManifest
from robot_stack.policy.runtime import OnnxPolicy
from robot_stack.transport.protocol import DEFAULT_MAX_MESSAGE_BYTES
from robot_stack.transport.server import PolicyServer

__all__ = ["PolicyService", "main", "serve"]

log = logging.getLogger("robot_stack.policy.service")

#: Request meta keys echoed back in the reply (so the robot side can stamp the ActionChunk).
ECHO_META_KEYS = ("t_obs_ns", "episode", "step")


class PolicyService:
    """A :class:`PolicyServer` handler that runs an :class:`OnnxPolicy`.

    Request arrays must be exactly the model's inputs (names, dtypes, shapes, see the manifest); the reply carries
    every output plus meta ``{model_id, action_space, action_head, dt_s, horizon, control_rate_hz, provider}``
    and the echoed request meta keys :data:`ECHO_META_KEYS`.
    """

    def __init__(self, policy: OnnxPolicy) -> None:
        self.policy = policy
        m = policy.manifest
        self.model_id = m.model_id
        self._meta: dict[str, Any] = {
            "model_id": m.model_id,
            "action_space": m.action_space,
            "action_head": m.action_head,
            "dt_s": m.dt_s,
            "horizon": m.horizon,
            "control_rate_hz": m.control_rate_hz,
            "provider": policy.provider,
        }

    def __call__(
        self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        outputs = self.policy.run(arrays)
        reply_meta = dict(self._meta)
        for key in ECHO_META_KEYS:
            if key in meta:
                reply_meta[key] = meta[key]
        return outputs, reply_meta

    def metadata(self) -> dict[str, Any]:
        """Manifest summary (inputs, outputs, action space, rates, normalisation) and the provider in use."""
        return {**self.policy.manifest.summary(), "provider": self.policy.provider}


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
    """
    manifest = PolicyManifest.load(manifest_path)
    policy = OnnxPolicy(manifest, provider, strict=strict, intra_op_threads=threads)
    policy.warmup()
    stop = stop_event or threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    server = PolicyServer(PolicyService(policy), bind, max_message_bytes=max_message_bytes)
    try:
        server.start()
        log.info("serving %s on %s (%s)", manifest.model_id, server.endpoint, policy.provider)
        if on_ready is not None:
            on_ready(server.endpoint)
        while not stop.wait(0.2):
            pass
        log.info("stopping: %s", server.stats())
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Subprocess entry: serve a manifest and print ``READY <endpoint>`` once bound."""
    parser = argparse.ArgumentParser(prog="python -m robot_stack.policy.service", description=__doc__)
    parser.add_argument("--manifest", required=True, help="model YAML manifest")
    parser.add_argument("--bind", default="tcp://127.0.0.1:5555", help="ZeroMQ endpoint (tcp://127.0.0.1:* = any)")
    parser.add_argument("--provider", default=None, choices=["cpu", "cuda", "tensorrt"])
    parser.add_argument("--strict", action="store_true", help="fail if the provider is unavailable")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from robot_stack.errors import RobotStackError

    try:
        serve(
            args.manifest,
            args.bind,
            args.provider,
            strict=args.strict,
            threads=args.threads,
            on_ready=lambda endpoint: print(f"READY {endpoint}", flush=True),
        )
    except RobotStackError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
