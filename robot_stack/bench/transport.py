"""``robot-stack bench transport``: PolicyClient/PolicyServer round trip vs raw pyzmq REQ/REP, same payload.

Payload: a realistic observation: two 640x480 RGB (uint8), one 640x480 depth (uint16) and an 11-float state
(~2.4 MB). Both servers run in their own subprocess and answer with an (8, 3) float32 chunk; the raw one does the
bare minimum (receive multipart zero-copy, send two frames). Measurements alternate in batches between the two
so that load changes on the machine hit both alike. ``ratio_vs_raw_zmq`` = p50(policy) / p50(raw); target <= 1.5.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import zmq

from robot_stack.bench.common import latency_stats, register

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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "robot_stack.bench.transport", kind],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"{kind} bench server failed to start (got {line!r})")
    return proc, line.split()[1]


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@register("transport")
def run(quick: bool) -> dict[str, Any]:
    from robot_stack.transport.client import PolicyClient

    obs = observation()
    payload_bytes = sum(a.nbytes for a in obs.values())
    batches, per_batch = (4, 10) if quick else (10, 30)
    ctx = zmq.Context.instance()
    policy_proc, policy_ep = _start("policy")
    raw_proc, raw_ep = _start("raw")
    try:
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
        for _ in range(5):  # warm both connections
            client.infer(obs)
            raw_call()
        for _ in range(batches):
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
        client.close()
        req.close(0)
    finally:
        _stop(policy_proc)
        _stop(raw_proc)
    pol = latency_stats(np.array(policy_s), "policy_")
    raw = latency_stats(np.array(raw_s), "raw_zmq_")
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
    }


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


if __name__ == "__main__":  # subprocess entry of the benchmark's servers: ``python -m ... raw|policy``
    {"raw": _serve_raw, "policy": _serve_policy}[sys.argv[1]]()
