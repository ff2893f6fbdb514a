"""``robot-stack bench fleet``: 16 robots against the Ray Serve fleet with 1 and 2 replicas, and the ingress's
overhead against a direct ``robot-stack serve`` on the same payload.

Model and payload: those of ``bench serve`` (a 48x64 RGB image + 64 floats -> a (16, 7) chunk, ONNX Runtime, one
intra-op thread, ``max_batch`` 8). Servers run in subprocesses, one after another: the direct server (the same-run
baseline), then ``python -m robot_stack.fleet.serve`` with 1 replica, then with 2 (each its own private loopback
Ray instance; the time to READY is reported as ``fleet*_startup_s``). Clients are threads of this process, each
its own DEALER and robot id, back-to-back requests.

Figures: per setup ``throughput_hz``, client-side ``p50_ms`` / ``p99_ms`` and ``errors`` with 16 clients;
``throughput_ratio_2_vs_1`` = fleet 2 replicas / 1 replica at 16 clients; ``ingress_overhead_ratio`` = fleet (1
replica) / direct p50 round trip of one robot alone (what the extra hop costs one robot), and
``ingress_throughput_ratio_16`` = fleet (1 replica) / direct throughput at 16 clients; ``*_requests_per_ray_call``:
how many requests the ingress sent per Ray call (its chunking). On a machine with fewer
cores than replicas + ingress + clients, a second replica cannot add throughput: read the ratio with the core
count (``cpu_count``), which is reported too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from robot_stack.bench.registry import register
from robot_stack.bench.serve import MAX_BATCH, _load, _start, _write_model

CLIENTS = 16


def _start_fleet(manifest: Path, replicas: int, timeout_s: float = 240.0) -> tuple[subprocess.Popen[str], str, float]:
    """Start a fleet ingress with ``replicas`` replicas in its own session; return (process, endpoint, startup s)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "robot_stack.fleet.serve", "--manifest", str(manifest), "--bind", "tcp://127.0.0.1:*"]
    cmd += ["--replicas", str(replicas), "--max-batch", str(MAX_BATCH), "--cpus-per-replica", "0.5"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return proc, line.split()[1], time.perf_counter() - t0
        if not line and proc.poll() is not None:
            break
    _stop(proc)
    raise RuntimeError(f"fleet ingress with {replicas} replica(s) did not become ready (exit {proc.poll()}): {cmd}")


def _stop(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    """SIGTERM (the fleet stops its Ray instance), then SIGKILL to the session it leads as a last resort."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of its session is left (Ray processes it started)
    if proc.poll() is None:
        proc.wait(10)


@register("fleet")
def run(quick: bool) -> dict[str, Any]:
    duration = 1.0 if quick else 3.0
    out: dict[str, Any] = {
        "model": "mlp rgb48x64+state64 -> 16x7, ORT cpu 1 thread per server/replica",
        "max_batch": MAX_BATCH,
        "clients": CLIENTS,
        "cpu_count": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="robot-stack-bench-fleet-") as tmp:
        manifest = _write_model(Path(tmp))
        proc, endpoint = _start(manifest, MAX_BATCH)
        try:
            _load(endpoint, CLIENTS, 0.3, "warm")
            out.update({f"direct_clients1_{k}": v for k, v in _load(endpoint, 1, duration, "d1").items()})
            out.update({f"direct_{k}": v for k, v in _load(endpoint, CLIENTS, duration, "d16").items()})
        finally:
            _stop(proc)
        for replicas in (1, 2):
            proc, endpoint, startup_s = _start_fleet(manifest, replicas)
            prefix = f"replicas{replicas}_"
            try:
                out[prefix + "startup_s"] = round(startup_s, 1)
                _load(endpoint, CLIENTS, 0.5, f"warm{replicas}")
                if replicas == 1:
                    out.update({f"{prefix}clients1_{k}": v for k, v in _load(endpoint, 1, duration, "f1").items()})
                res = _load(endpoint, CLIENTS, duration, f"f{replicas}")
                out.update({prefix + k: v for k, v in res.items()})
                out[prefix + "requests_per_ray_call"] = _requests_per_call(endpoint)
            finally:
                _stop(proc)
    out["throughput_ratio_2_vs_1"] = _ratio(out["replicas2_throughput_hz"], out["replicas1_throughput_hz"])
    out["ingress_overhead_ratio"] = _ratio(out["replicas1_clients1_p50_ms"], out["direct_clients1_p50_ms"])
    out["ingress_throughput_ratio_16"] = _ratio(out["replicas1_throughput_hz"], out["direct_throughput_hz"])
    return out


def _requests_per_call(endpoint: str) -> float:
    """Mean requests per Ray call since the fleet started (the ingress's chunking, from its ``health``)."""
    from robot_stack.transport.client import PolicyClient

    with PolicyClient(endpoint, "bench-monitor", timeout_s=5.0) as monitor:
        fleet = monitor.health()["fleet"]
    return round(fleet.get("requests", 0) / max(fleet.get("calls", 0), 1), 2)


def _ratio(a: float, b: float) -> float:
    return round(a / max(b, 1e-9), 3)
