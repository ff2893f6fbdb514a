"""``robot-stack bench transport``: PolicyClient/PolicyServer round trip vs raw pyzmq REQ/REP and vs openpi-client's
websocket + msgpack, same payload, same run.

Payload: a realistic observation: two 640x480 RGB (uint8), one 640x480 depth (uint16) and an 11-float state
(~2.4 MB). Every server runs in its own subprocess and answers with an (8, 3) float32 chunk:

* **raw**: bare pyzmq REP (receive multipart zero-copy, send two frames) — the floor;
* **policy**: robot-stack's :class:`PolicyServer` with a handler returning the chunk;
* **openpi**: the client is ``openpi_client.websocket_client_policy.WebsocketClientPolicy`` unchanged. openpi's
  server (``openpi.serving.websocket_policy_server``) ships in the ``openpi`` package, which is not installable
  here (it pulls JAX and model code), so the server side is a minimal re-implementation of the same wire
  behaviour with the same libraries: ``websockets.asyncio.server.serve(..., compression=None, max_size=None)``,
  metadata packed and sent on connect, then per message ``msgpack_numpy.unpackb`` -> policy -> result dict with
  ``server_timing`` -> ``msgpack_numpy.Packer().pack`` (``openpi_client.msgpack_numpy``).

Measurements alternate in batches between the servers so that load changes on the machine hit all alike.
``ratio_vs_raw_zmq`` = p50(policy) / p50(raw), target <= 1.5; ``ratio_vs_openpi`` = p50(policy) / p50(openpi),
target < 1. Without ``openpi-client`` installed the openpi figures are omitted and ``openpi_skipped`` says why.

openpi interop, both directions, same payload (``robot-stack serve --openpi-port``; ``policy.endpoint: ws://``):

* **gateway**: openpi-client's ``WebsocketClientPolicy`` -> robot-stack's :class:`~robot_stack.transport.openpi
  .OpenPIGateway` -> the robot-stack ZeroMQ server (loopback, same process as the gateway); ``gateway_*``;
* **openpi_endpoint**: robot-stack's :class:`~robot_stack.transport.openpi.OpenPIClient` (the robot side's endpoint
  for ``ws://`` servers, strict decoding, deadlines) -> the openpi-style server above; ``openpi_endpoint_*``,
  compared with openpi-client on the same server (``ratio_endpoint_vs_openpi``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from typing import Any

import numpy as np
import zmq

from robot_stack.bench.registry import register
from robot_stack.bench.server_process import start_server, stop_server
from robot_stack.console import report_progress
from robot_stack.metrics import latency_stats

CHUNK = np.linspace(-0.01, 0.01, 24, dtype=np.float32).reshape(8, 3)


def observation() -> dict[str, np.ndarray]:
    """Two RGB cameras, one depth map, a proprio state vector (random content, fixed seed)."""
    rng = np.random.default_rng(0)
    return {
        "front/rgb": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "wrist/rgb": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "front/depth": rng.integers(0, 4000, (480, 640), dtype=np.uint16),
        "state": rng.normal(size=11).astype(np.float32),
    }


def _start(kind: str) -> tuple[subprocess.Popen[str], str]:
    return start_server("robot_stack.bench.transport", [kind], kind)


@register("transport")
def run(quick: bool) -> dict[str, Any]:
    from robot_stack.transport.client import PolicyClient

    obs = observation()
    payload_bytes = sum(a.nbytes for a in obs.values())
    batches, per_batch = (4, 10) if quick else (10, 30)
    ctx = zmq.Context.instance()
    have_openpi = importlib.util.find_spec("openpi_client") is not None
    policy_proc, policy_ep = _start("policy")
    raw_proc, raw_ep = _start("raw")
    openpi_proc, openpi_ep = _start("openpi") if have_openpi else (None, "")
    gateway_proc, gateway_ep = _start("gateway") if have_openpi else (None, "")
    openpi_s: list[float] = []
    gateway_s: list[float] = []
    endpoint_s: list[float] = []
    try:
        openpi_call = _openpi_client(openpi_ep, obs) if have_openpi else None
        gateway_call = _openpi_client(gateway_ep, obs) if have_openpi else None
        endpoint_call = _rs_openpi_client(openpi_ep, obs) if have_openpi else None
        client = PolicyClient(policy_ep, "bench", timeout_s=10.0)
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, 10_000)
        req.connect(raw_ep)
        raw_frames = [b"obs", *(memoryview(a.reshape(-1).view(np.uint8)) for a in obs.values())]

        def raw_call() -> None:
            req.send_multipart(raw_frames, copy=False)
            reply = req.recv_multipart(copy=False)
            np.frombuffer(reply[1].buffer, dtype=np.float32)

        policy_s: list[float] = []
        raw_s: list[float] = []
        serialize, network, server = [], [], []
        for _ in range(5):  # warm every connection
            client.infer(obs)
            raw_call()
            for call in (openpi_call, gateway_call, endpoint_call):
                if call is not None:
                    call()
        for b in range(batches):
            report_progress("bench transport", b, batches, "batches")
            for call, samples in ((openpi_call, openpi_s), (gateway_call, gateway_s), (endpoint_call, endpoint_s)):
                if call is None:
                    continue
                for _ in range(per_batch):
                    t0 = time.perf_counter_ns()
                    call()
                    samples.append((time.perf_counter_ns() - t0) / 1e9)
            for _ in range(per_batch):
                t0 = time.perf_counter_ns()
                raw_call()
                raw_s.append((time.perf_counter_ns() - t0) / 1e9)
            for _ in range(per_batch):
                t0 = time.perf_counter_ns()
                reply = client.infer(obs)
                policy_s.append((time.perf_counter_ns() - t0) / 1e9)
                serialize.append(reply.timing.serialize_ms)
                network.append(reply.timing.network_ms)
                server.append(reply.timing.server_ms)
            if not np.array_equal(reply.arrays["actions"], CHUNK):
                raise RuntimeError("policy server returned a wrong chunk")
        report_progress("bench transport", batches, batches, "batches")
        client.close()
        req.close(0)
    finally:
        stop_server(policy_proc)
        stop_server(raw_proc)
        for proc in (openpi_proc, gateway_proc):
            if proc is not None:
                stop_server(proc)
    pol = latency_stats(np.array(policy_s), "policy_")
    raw = latency_stats(np.array(raw_s), "raw_zmq_")
    openpi: dict[str, Any] = {"openpi_skipped": "openpi-client not installed (pip install --no-deps openpi-client)"}
    if openpi_s:
        stats = latency_stats(np.array(openpi_s), "openpi_")
        openpi = {
            **stats,
            "ratio_vs_openpi": round(pol["policy_p50_ms"] / stats["openpi_p50_ms"], 3),
            "ratio_p99_vs_openpi": round(pol["policy_p99_ms"] / stats["openpi_p99_ms"], 3),
            "openpi_server": "minimal websockets+msgpack_numpy server (openpi's own needs the openpi package)",
        }
    if gateway_s and endpoint_s and openpi_s:
        gw = latency_stats(np.array(gateway_s), "gateway_")
        ep = latency_stats(np.array(endpoint_s), "openpi_endpoint_")
        openpi.update(
            {
                **gw,
                "ratio_gateway_vs_openpi": round(gw["gateway_p50_ms"] / openpi["openpi_p50_ms"], 3),
                **ep,
                "ratio_endpoint_vs_openpi": round(ep["openpi_endpoint_p50_ms"] / openpi["openpi_p50_ms"], 3),
            }
        )
    return {
        "payload_mb": round(payload_bytes / 1e6, 3),
        **pol,
        **raw,
        "ratio_vs_raw_zmq": round(pol["policy_p50_ms"] / raw["raw_zmq_p50_ms"], 3),
        "ratio_p99_vs_raw_zmq": round(pol["policy_p99_ms"] / raw["raw_zmq_p99_ms"], 3),
        "target_ratio": 1.5,
        "client_serialize_p50_ms": round(float(np.median(serialize)), 4),
        "server_p50_ms": round(float(np.median(server)), 4),
        "network_p50_ms": round(float(np.median(network)), 4),
        **openpi,
    }


def _openpi_client(endpoint: str, obs: dict[str, np.ndarray]) -> Any:
    """A call of openpi-client's own ``WebsocketClientPolicy.infer`` on ``obs``, checked like the others."""
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    host, port = endpoint.rsplit(":", 1)
    policy = WebsocketClientPolicy(host=host, port=int(port))

    def call() -> None:
        result = policy.infer(obs)
        if not np.array_equal(result["actions"], CHUNK):
            raise RuntimeError("openpi-style server returned a wrong chunk")

    return call


def _rs_openpi_client(endpoint: str, obs: dict[str, np.ndarray]) -> Any:
    """A call of robot-stack's :class:`OpenPIClient` (the robot side's ``ws://`` endpoint) on ``obs``."""
    from robot_stack.transport.openpi import OpenPIClient

    client = OpenPIClient(endpoint, timeout_s=10.0)

    def call() -> None:
        reply = client.infer(obs)
        if not np.array_equal(reply.arrays["actions"], CHUNK):
            raise RuntimeError("openpi-style server returned a wrong chunk to OpenPIClient")

    return call


# ----------------------------------------------------------------------------------- server subprocesses


def _serve_raw() -> None:
    ctx = zmq.Context.instance()
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind("tcp://127.0.0.1:*")
    print(f"READY {rep.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
    while True:
        rep.recv_multipart(copy=False)
        rep.send_multipart([b"ok", memoryview(CHUNK.reshape(-1).view(np.uint8))], copy=False)


def _serve_policy() -> None:
    import signal
    import threading

    from robot_stack.transport.server import PolicyServer

    def handler(arrays: Any, meta: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"actions": CHUNK}, {}

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with PolicyServer(handler, bind="tcp://127.0.0.1:*") as server:
        print(f"READY {server.endpoint}", flush=True)
        stop.wait()


def _serve_gateway() -> None:
    """The policy bench server with robot-stack's openpi gateway in front of it (one process, loopback hop)."""
    import signal
    import threading

    from robot_stack.transport.openpi import OpenPIGateway
    from robot_stack.transport.server import PolicyServer

    def handler(arrays: Any, meta: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"actions": CHUNK}, {}

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with (
        PolicyServer(handler, bind="tcp://127.0.0.1:*") as server,
        OpenPIGateway(server.endpoint, port=0, timeout_s=10.0) as gateway,
    ):
        print(f"READY {gateway.endpoint}", flush=True)
        stop.wait()


def _serve_openpi() -> None:
    """Same wire behaviour as openpi's ``WebsocketPolicyServer`` (see the module docstring), written here."""
    import asyncio
    import signal
    import socket

    import websockets
    import websockets.asyncio.server
    from openpi_client import msgpack_numpy

    def infer(obs: dict[str, Any]) -> dict[str, Any]:
        return {"actions": CHUNK}

    async def handler(ws: Any) -> None:
        packer = msgpack_numpy.Packer()
        await ws.send(packer.pack({"server": "openpi-compatible bench server"}))
        while True:
            try:
                obs = msgpack_numpy.unpackb(await ws.recv())
                t0 = time.monotonic()
                action = infer(obs)
                action["server_timing"] = {"infer_ms": (time.monotonic() - t0) * 1e3}
                await ws.send(packer.pack(action))
            except websockets.ConnectionClosed:
                return

    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        stop = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
        async with websockets.asyncio.server.serve(handler, sock=sock, compression=None, max_size=None):
            print(f"READY ws://127.0.0.1:{port}", flush=True)
            await stop

    asyncio.run(main())


if __name__ == "__main__":  # subprocess entry of the benchmark's servers: ``python -m ... raw|policy|openpi``
    {"raw": _serve_raw, "policy": _serve_policy, "openpi": _serve_openpi, "gateway": _serve_gateway}[sys.argv[1]]()
